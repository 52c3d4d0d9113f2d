// TLS on the client port, from C++: ringkv::connect_with and
// ringkv::ClientOptions to a ringkv-node whose client port has a
// certificate from the cluster CA; a put and a get; then refusals thrown
// as rust::Error with the C ABI's codes. Built and run by tests/it/tls.rs;
// exits 0 only when every check holds.
//
// Usage: tls_client_cpp ADDR CA_PEM_FILE OTHER_CA_PEM_FILE USER PASSWORD

#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "ringkv-ffi/src/cxx_bridge.rs.h"
#include "rust/cxx.h"
#include "ringkv.h"

namespace {

int failures = 0;

void check(bool ok, const char *what, int line) {
  if (!ok) {
    failures++;
    std::cerr << "FAILED line " << line << ": " << what << "\n";
  }
}

#define CHECK(cond) check((cond), #cond, __LINE__)

rust::Slice<const uint8_t> bytes(const std::string &s) {
  return rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t *>(s.data()), s.size());
}

std::string read_file(const char *path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Connects with `options`; returns the C ABI code of the failure
// (RINGKV_OK when connected), printing "<label>: <what()>".
uint32_t try_connect(const char *label, const std::string &addr,
                     const ringkv::ClientOptions &options) {
  try {
    rust::Box<ringkv::Client> client = ringkv::connect_with(addr, options);
    std::cout << label << ": connected\n";
    return RINGKV_OK;
  } catch (const rust::Error &e) {
    std::cout << label << ": " << e.what() << "\n";
    return ringkv::result_code(e.what());
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 6) {
    std::cerr << "usage: " << argv[0] << " ADDR CA_PEM_FILE OTHER_CA_PEM_FILE USER PASSWORD\n";
    return 2;
  }
  const std::string addr = argv[1];
  ringkv::ClientOptions options{};
  options.user = argv[4];
  options.password = argv[5];
  options.tls_ca_pem = read_file(argv[2]);
  CHECK(!options.tls_ca_pem.empty());
  try {
    rust::Box<ringkv::Client> client = ringkv::connect_with(addr, options);
    std::cout << "tls: connected\n";
    const std::string value = "a C++ value only TLS may carry";
    client->set_bucket_policy(bytes("tls"), ringkv::Policy::Lww);
    client->put(bytes("tls"), bytes("cpp"), bytes(value), ringkv::Consistency::One);
    rust::Vec<uint8_t> got = client->get(bytes("tls"), bytes("cpp"), ringkv::Consistency::One);
    std::string text(got.begin(), got.end());
    CHECK(text == value);
    std::cout << "tls: get tls/cpp = " << text << "\n";
  } catch (const rust::Error &e) {
    failures++;
    std::cerr << "FAILED: the TLS round trip threw " << e.what() << "\n";
  }

  ringkv::ClientOptions named = options;
  named.server_name = "db.example.test";
  CHECK(try_connect("tls, named", addr, named) == RINGKV_OK);

  ringkv::ClientOptions wrong_name = options;
  wrong_name.server_name = "elsewhere.example.test";
  CHECK(try_connect("wrong name", addr, wrong_name) == RINGKV_TLS);

  ringkv::ClientOptions other_ca = options;
  other_ca.tls_ca_pem = read_file(argv[3]);
  CHECK(try_connect("other CA", addr, other_ca) == RINGKV_TLS);

  ringkv::ClientOptions plain = options;
  plain.tls_ca_pem = "";
  CHECK(try_connect("no CA", addr, plain) == RINGKV_CONNECTION);

  ringkv::ClientOptions bad_pem = options;
  bad_pem.tls_ca_pem = "not a certificate";
  CHECK(try_connect("bad PEM", addr, bad_pem) == RINGKV_INVALID_ARGUMENT);

  if (failures != 0) {
    std::cerr << failures << " checks failed\n";
    return 1;
  }
  std::cout << "tls: all checks passed\n";
  return 0;
}
