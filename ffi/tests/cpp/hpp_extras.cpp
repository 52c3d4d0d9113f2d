// The parts of the C++17 RAII API (include/ringkv.hpp) that wrap the C
// ABI's older calls and the rest of the cluster options: replace, erase
// and get_value (read first, then write), counters, sets, set_bucket_policy
// with a Policy; ClusterOptions::policy and ClusterOptions::log (a
// std::function kept alive by the Cluster, called from the nodes' threads,
// never after the Cluster is gone, an exception out of it dropped); a
// client's tls_ca_file. On an embedded cluster and through a Client.
// Runs in a process of its own (the log subscriber is process-wide).
// Exits 0 only when every check holds.
#include "ringkv.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

static int failures = 0;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      failures++;                                                     \
      std::fprintf(stderr, "FAILED line %d: %s\n", __LINE__, #cond); \
    }                                                                 \
  } while (0)

namespace kv = ringkv::hl;
using kv::Bytes;
using kv::Consistency;

static Bytes b(const std::string &s) { return Bytes(s.begin(), s.end()); }

/// Runs `f`, which must throw kv::Error with `code`.
template <class F>
static bool throws(ringkv_result code, F f) {
  try {
    f();
  } catch (const kv::Error &e) {
    if (e.code() != code) std::fprintf(stderr, "threw %s\n", e.what());
    return e.code() == code;
  }
  return false;
}

template <class Store>
static void exercise(const Store &s, const char *who) {
  const auto Q = Consistency::Quorum;
  // replace: 150 overwrites of one key in a Siblings bucket hold one value
  // (past the sibling cap of 100: each reads first).
  s.set_bucket_policy("plain", kv::Policy::Siblings);
  for (int i = 0; i < 150; i++) s.replace("plain", "k", "v" + std::to_string(i), Q);
  std::optional<Bytes> v = s.get_value("plain", "k", Q);
  CHECK(v && *v == b("v149"));
  auto o = s.get("plain", "k", Q);
  CHECK(o && o->values.size() == 1);
  s.erase("plain", "k", Q);
  CHECK(!s.get_value("plain", "k", Q).has_value());
  CHECK(!s.get("plain", "k", Q).has_value());
  // Binary key, empty value.
  const Bytes bin{0, 9, 0};
  s.replace("plain", bin, Bytes{}, Q);
  std::optional<Bytes> empty = s.get_value("plain", bin, Q);
  CHECK(empty && empty->empty());
  // Siblings from two blind writes: get_value throws RINGKV_SIBLINGS.
  s.put("plain", "two", "a", {}, Consistency::All);
  s.put("plain", "two", "b", {}, Consistency::All);
  CHECK(throws(RINGKV_SIBLINGS, [&] { s.get_value("plain", "two", Consistency::All); }));
  s.replace("plain", "two", "c", Consistency::All);
  CHECK(s.get_value("plain", "two", Consistency::All) == std::optional<Bytes>(b("c")));
  std::printf("%s: replace x150 = 1 value, erase = nullopt, siblings throw RINGKV_SIBLINGS\n",
              who);

  // Counters.
  s.set_bucket_policy("hits", kv::Policy::PnCounter);
  CHECK(s.counter_get("hits", "home", Q) == 0);
  CHECK(s.counter_add("hits", "home", 5, Q) == 5);
  CHECK(s.counter_add("hits", "home", -2, Q) == 3);
  CHECK(s.counter_get("hits", "home", Q) == 3);
  CHECK(throws(RINGKV_INVALID_ARGUMENT, [&] { s.counter_add("plain", "k", 1, Q); }));
  std::printf("%s: counter 5 - 2 = %lld\n", who,
              static_cast<long long>(s.counter_get("hits", "home", Q)));

  // Sets, members in byte order; an empty member.
  s.set_bucket_policy("tags", kv::Policy::OrSet);
  s.set_add("tags", "post", "rust", Q);
  s.set_add("tags", "post", "c", Q);
  s.set_add("tags", "post", "", Q);
  s.set_add("tags", "post", "zig", Q);
  s.set_remove("tags", "post", "zig", Q);
  std::vector<Bytes> members = s.set_members("tags", "post", Q);
  CHECK(members == (std::vector<Bytes>{Bytes{}, b("c"), b("rust")}));
  CHECK(s.set_members("tags", "never", Q).empty());
  CHECK(throws(RINGKV_INVALID_ARGUMENT, [&] { s.set_add("hits", "home", "x", Q); }));
  std::printf("%s: set members = %zu, in byte order\n", who, members.size());

  // Bad arguments throw with the code.
  CHECK(throws(RINGKV_INVALID_ARGUMENT, [&] { s.replace("", "k", "v"); }));
  CHECK(throws(RINGKV_INVALID_ARGUMENT, [&] { s.get_value("plain", ""); }));
  CHECK(throws(RINGKV_INVALID_ARGUMENT,
               [&] { s.set_bucket_policy("plain", static_cast<kv::Policy>(99)); }));
  CHECK(throws(RINGKV_INVALID_ARGUMENT,
               [&] { s.counter_get("hits", "home", static_cast<Consistency>(9)); }));
  std::printf("%s: bad arguments throw RINGKV_INVALID_ARGUMENT\n", who);
}

struct LogCounts {
  std::atomic<long> lines{0};
  std::atomic<long> above{0};
  std::atomic<long> up{0};
  std::atomic<long> bad{0};
  std::atomic<long> after{0};
  std::atomic<bool> gone{false};
};

int main() {
  try {
    // The default policy: LWW for every bucket; a bucket's own overrides.
    {
      kv::ClusterOptions lww;
      lww.policy = kv::Policy::Lww;
      kv::Cluster c(3, kv::Transport::Memory, lww);
      c.put("p", "k", "1", {}, Consistency::All);
      c.put("p", "k", "2", {}, Consistency::All);
      auto one = c.get("p", "k", Consistency::All);
      CHECK(one && one->values.size() == 1);
      c.set_bucket_policy("q", kv::Policy::Siblings);
      c.put("q", "k", "1", {}, Consistency::All);
      c.put("q", "k", "2", {}, Consistency::All);
      auto two = c.get("q", "k", Consistency::All);
      CHECK(two && two->values.size() == 2);
      kv::Cluster d(3);  // the library's default: Siblings
      d.put("p", "k", "1", {}, Consistency::All);
      d.put("p", "k", "2", {}, Consistency::All);
      auto dflt = d.get("p", "k", Consistency::All);
      CHECK(dflt && dflt->values.size() == 2);
      std::printf("policy: Lww default = %zu value, bucket Siblings = %zu, library default = %zu\n",
                  one ? one->values.size() : 0, two ? two->values.size() : 0,
                  dflt ? dflt->values.size() : 0);
      kv::ClusterOptions bad;
      bad.policy = static_cast<kv::Policy>(0);
      CHECK(throws(RINGKV_INVALID_ARGUMENT, [&] { kv::Cluster x(1, kv::Transport::Memory, bad); }));
    }

    // The log callback at Info, and a second one (which throws) beside
    // it. The Cluster keeps its own copy: the options (and the lambda's
    // original) die first.
    auto counts = std::make_shared<LogCounts>();
    auto quiet = std::make_shared<LogCounts>();
    {
      std::optional<kv::Cluster> c;
      {
        kv::ClusterOptions o;
        o.log_level = kv::LogLevel::Info;
        o.log = [counts](kv::LogLevel level, std::string_view target, std::string_view msg) {
          if (counts->gone) counts->after++;
          counts->lines++;
          if (level > kv::LogLevel::Info || level < kv::LogLevel::Error) counts->above++;
          if (target.empty() || msg.empty()) counts->bad++;
          if (msg.find("is up") != std::string_view::npos) counts->up++;
        };
        c.emplace(3, kv::Transport::Memory, o);
      }  // o and its std::function are gone; the Cluster holds its own copy
      // A cluster whose callback throws on every line: nothing escapes.
      kv::ClusterOptions t;
      t.log = [quiet](kv::LogLevel, std::string_view, std::string_view) {
        quiet->lines++;
        throw std::runtime_error("from the callback");
      };
      t.log_level = kv::LogLevel::Info;
      kv::Cluster thrower(1, kv::Transport::Memory, t);
      for (int i = 0; i < 20; i++) c->replace("logged", "k" + std::to_string(i), "v");
      thrower.replace("x", "k", "v");
      // Move: the callback moves with the cluster and keeps working.
      kv::Cluster moved(std::move(*c));
      CHECK(!*c && moved);
      long before = counts->lines.load();
      // Move-assign over a live cluster with a callback (at Trace: it gets
      // lines while its nodes shut down): that cluster is freed first,
      // then its callback (the other order is a heap-use-after-free).
      kv::ClusterOptions old_opts;
      old_opts.log_level = kv::LogLevel::Trace;
      old_opts.log = [tag = std::string(64, 'y')](kv::LogLevel, std::string_view,
                                                   std::string_view) { (void)tag.size(); };
      kv::Cluster target(3, kv::Transport::Memory, old_opts);
      target = std::move(moved);
      CHECK(target && !moved);
      target.replace("logged", "after-move", "v");
      CHECK(counts->lines.load() >= before);
      c.reset();
    }  // every cluster is freed here
    counts->gone = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(counts->lines >= 1);
    CHECK(counts->up >= 1);
    CHECK(counts->above == 0);
    CHECK(counts->bad == 0);
    CHECK(counts->after == 0);
    CHECK(quiet->lines >= 1);  // it was called, and threw, and nothing broke
    // The shared state is held only by this function now: the clusters
    // freed their copies of the callbacks.
    CHECK(counts.use_count() == 1);
    CHECK(quiet.use_count() == 1);
    std::printf("log: %ld lines at Info or below, %ld say a node is up, %ld after the Cluster\n",
                counts->lines.load(), counts->up.load(), counts->after.load());
    std::printf("log: a throwing callback is contained; the callbacks were freed with their clusters\n");

    // Lifetime: a callback at Trace gets lines while the nodes shut down
    // (the Cluster's destructor); its copy must still be alive then (a
    // freed one is a heap-use-after-free under ASan).
    auto traced = std::make_shared<std::atomic<long>>(0);
    {
      kv::ClusterOptions o;
      o.log_level = kv::LogLevel::Trace;
      std::string tag(64, 'x');  // heap state the callback's copy owns
      o.log = [traced, tag](kv::LogLevel, std::string_view, std::string_view) {
        if (tag.size() == 64) (*traced)++;
      };
      kv::Cluster c(3, kv::Transport::Memory, o);
      c.replace("traced", "k", "v");
    }
    CHECK(*traced >= 1);
    CHECK(traced.use_count() == 1);

    // The rest on a memory cluster and through a client.
    kv::Cluster mem(3);
    exercise(mem, "cluster");
    kv::ClusterOptions tcpo;
    tcpo.vnodes = 16;
    kv::Cluster tcp(3, kv::Transport::Tcp, tcpo);
    kv::ClientOptions co;
    co.request_timeout = std::chrono::milliseconds(5000);
    kv::Client client(tcp.client_addrs(), co);
    exercise(client, "client");
    client.close();
    CHECK(throws(RINGKV_CLOSED, [&] { client.counter_get("hits", "home"); }));
    CHECK(throws(RINGKV_CLOSED, [&] { client.set_members("tags", "post"); }));
    CHECK(throws(RINGKV_CLOSED, [&] { client.replace("plain", "k", "v"); }));

    // A CA file that cannot be read: the setter's error, before dialing.
    kv::ClientOptions ca;
    ca.tls_ca_file = "/nonexistent/ringkv-ca.pem";
    CHECK(throws(RINGKV_INVALID_ARGUMENT, [&] { kv::Client x(tcp.client_addrs(), ca); }));
    std::printf("client: closed = RINGKV_CLOSED, an unreadable tls_ca_file = RINGKV_INVALID_ARGUMENT\n");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "FAILED: uncaught %s\n", e.what());
    return 1;
  }
  if (failures != 0) {
    std::fprintf(stderr, "hpp_extras: %d checks failed\n", failures);
    return 1;
  }
  std::printf("hpp_extras: all checks passed\n");
  return 0;
}
