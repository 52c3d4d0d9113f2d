// ringkv from C++, through the cxx bridge: start an embedded 3-node
// cluster, put, get, delete, count, add to a set, and show the exception a
// bad argument gets; then, when given client addresses
// (HOST:PORT[,HOST:PORT...]) as argv[1], do the same round trip through a
// connection to that running cluster, as the user argv[2] with password
// argv[3] when given (an admin: the round trip sets bucket policies).
//
// Exits 0 only when every result it checks is what it should be. Its
// counter and set keys differ from the C example's, so that both can run
// against one cluster.
//
// Build (docs/ffi.md), after `cargo build -p ringkv-ffi`:
//   c++ -std=c++17 -Wall -Wextra -Werror -I target/debug/include
//       ffi/examples/ringkv_example.cpp target/debug/libringkv_ffi.a
//       -lpthread -ldl -lm -o example
// (one line).
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "ringkv-ffi/src/cxx_bridge.rs.h"
#include "rust/cxx.h"

namespace {

int failures = 0;

void check(bool ok, const std::string &what) {
  if (!ok) {
    ++failures;
    std::cerr << "FAILED: " << what << "\n";
  }
}

rust::Slice<const uint8_t> bytes(const char *text) {
  return rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t *>(text),
                                    std::strlen(text));
}

std::string text(const rust::Vec<uint8_t> &v) {
  return std::string(v.begin(), v.end());
}

// Runs `f`, which must throw a rust::Error whose code is `want`; returns
// the message.
template <typename F>
std::string expect_error(F f, uint32_t want, const std::string &what) {
  try {
    f();
    check(false, what + ": did not throw");
  } catch (const rust::Error &e) {
    uint32_t got = ringkv::result_code(e.what());
    check(got == want, what + ": threw " + e.what());
    return e.what();
  }
  return "";
}

// The round trip both classes go through.
template <typename Store>
void round_trip(const std::string &name, const Store &s) {
  using ringkv::Consistency;
  std::cout << name << ": round trip\n";
  s.set_bucket_policy(bytes("users"), ringkv::Policy::Lww);
  s.set_bucket_policy(bytes("hits"), ringkv::Policy::PnCounter);
  s.set_bucket_policy(bytes("tags"), ringkv::Policy::OrSet);

  s.put(bytes("users"), bytes("ada"), bytes("born 1815"), Consistency::Quorum);
  s.put(bytes("users"), bytes("ada"), bytes("born 10 Dec 1815"), Consistency::All);
  std::string got = text(s.get(bytes("users"), bytes("ada"), Consistency::Quorum));
  check(got == "born 10 Dec 1815", "get returns the value written last, got " + got);
  std::cout << name << ": get users/ada = " << got << "\n";

  s.remove(bytes("users"), bytes("ada"), Consistency::Quorum);
  rust::Vec<uint8_t> value;
  bool found = s.try_get(bytes("users"), bytes("ada"), Consistency::Quorum, value);
  check(!found && value.empty(), "try_get after delete finds nothing");
  std::string missing = expect_error(
      [&] { s.get(bytes("users"), bytes("ada"), Consistency::Default); }, 3,
      "get after delete");
  std::cout << name << ": get after delete: " << missing << "\n";

  s.counter_add(bytes("hits"), bytes("away"), 5, Consistency::Quorum);
  // The add answers the value at the replica that coordinated it, which
  // may not have the first add yet when another node coordinated that; a
  // read at QUORUM after adds at QUORUM has both.
  int64_t added = s.counter_add(bytes("hits"), bytes("away"), -2, Consistency::Quorum);
  int64_t count = s.counter_get(bytes("hits"), bytes("away"), Consistency::Quorum);
  check(count == 3, "counter_get reads 3 at QUORUM");
  std::cout << name << ": the add answered " << added << "\n";
  std::cout << name << ": counter hits/away = " << count << "\n";

  s.set_add(bytes("tags"), bytes("post-2"), bytes("rust"), Consistency::Quorum);
  s.set_add(bytes("tags"), bytes("post-2"), bytes("cpp"), Consistency::Quorum);
  rust::Vec<ringkv::Bytes> members =
      s.set_members(bytes("tags"), bytes("post-2"), Consistency::Quorum);
  check(members.size() == 2, "the set has 2 members");
  if (members.size() == 2) {
    check(text(members[0].data) == "cpp" && text(members[1].data) == "rust",
          "members in byte order");
  }
  std::cout << name << ": set tags/post-2 has " << members.size() << " members\n";

  // A bad argument: a consistency level that does not exist.
  std::string bad = expect_error(
      [&] {
        s.put(bytes("users"), bytes("ada"), bytes("x"), static_cast<Consistency>(9));
      },
      2, "consistency 9");
  check(bad.find("consistency 9") != std::string::npos, "the message names the level");
  std::cout << name << ": bad consistency: " << bad << "\n";
}

}  // namespace

int main(int argc, char **argv) {
  try {
    rust::Box<ringkv::Cluster> cluster = ringkv::start_cluster(3, ringkv::Transport::Memory);
    std::cout << "embedded: 3 nodes started\n";
    round_trip("embedded", *cluster);
  } catch (const rust::Error &e) {
    check(false, std::string("embedded: ") + e.what());
  }

  if (argc > 1) {
    try {
      if (argc > 3) {
        // A node that requires users answers nothing but Hello without
        // them, and a wrong password does not connect.
        rust::Box<ringkv::Client> anonymous = ringkv::connect(argv[1]);
        std::string denied = expect_error(
            [&] { anonymous->get(bytes("users"), bytes("ada"), ringkv::Consistency::Default); },
            14, "get without credentials");
        std::cout << "client: anonymous get: " << denied << "\n";
        std::string wrong = expect_error(
            [&] { ringkv::connect_auth(argv[1], argv[2], "not the password"); }, 14,
            "connect_auth with a wrong password");
        std::cout << "client: wrong password: " << wrong << "\n";
      }
      rust::Box<ringkv::Client> client =
          argc > 3 ? ringkv::connect_auth(argv[1], argv[2], argv[3]) : ringkv::connect(argv[1]);
      std::cout << "client: connected\n";
      round_trip("client", *client);
      client->close();
      std::string closed = expect_error(
          [&] {
            client->put(bytes("users"), bytes("ada"), bytes("x"), ringkv::Consistency::One);
          },
          6, "put on a closed client");
      std::cout << "client: closed: " << closed << "\n";
    } catch (const rust::Error &e) {
      check(false, std::string("client: ") + e.what());
    }
  }

  if (failures != 0) {
    std::cerr << failures << " checks failed\n";
    return 1;
  }
  std::cout << "all checks passed\n";
  return 0;
}
