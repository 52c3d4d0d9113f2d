// The C++17 RAII API's cluster options (ffi/include/ringkv.hpp): a
// default conflict policy for every bucket (Policy::Lww: concurrent
// writes leave one value) with one bucket set back to Siblings, and a log
// callback, a std::function the Cluster keeps alive until its nodes have
// stopped. The callback runs on the nodes' threads, concurrently, so it
// only touches an atomic and a mutex-guarded vector.
//
// Build (from the repository root, after cargo build --release -p ringkv-ffi):
//   c++ -std=c++17 -Wall -Wextra -Werror -I ffi/include ffi/examples/logging.cpp
//       target/release/libringkv_ffi.a -lpthread -ldl -lm -o logging
// (one line). Exits 0 when every check holds.
#include <atomic>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "ringkv.hpp"

namespace kv = ringkv::hl;

int main() {
  std::atomic<long> lines{0};
  std::atomic<long> above_info{0};
  std::mutex lock;
  std::vector<std::string> up;  // guarded by lock

  kv::ClusterOptions options;
  options.policy = kv::Policy::Lww;
  options.log_level = kv::LogLevel::Info;
  options.log = [&](kv::LogLevel level, std::string_view target, std::string_view message) {
    // Any node's thread, concurrently: copy what is kept.
    lines++;
    if (level > kv::LogLevel::Info) above_info++;
    if (message.find("is up") != std::string_view::npos) {
      std::lock_guard<std::mutex> g(lock);
      up.push_back(std::string(target) + ": " + std::string(message));
    }
  };
  try {
    {
      kv::Cluster cluster(3, kv::Transport::Memory, options);
      // Two blind writes: under the cluster's default, LWW, one value stays.
      cluster.put("prefs", "ada", "dark", {}, kv::Consistency::Quorum);
      cluster.put("prefs", "ada", "light", {}, kv::Consistency::Quorum);
      std::optional<kv::Object> prefs = cluster.get("prefs", "ada", kv::Consistency::Quorum);
      std::cout << "logging: two blind writes under Policy::Lww = "
                << (prefs ? prefs->values.size() : 0) << " value(s)\n";
      if (!prefs || prefs->values.size() != 1) return 1;
      // A bucket's own policy overrides the default.
      cluster.set_bucket_policy("carts", kv::Policy::Siblings);
      cluster.put("carts", "ada", "apple", {}, kv::Consistency::Quorum);
      cluster.put("carts", "ada", "pear", {}, kv::Consistency::Quorum);
      std::optional<kv::Object> cart = cluster.get("carts", "ada", kv::Consistency::Quorum);
      std::cout << "logging: two blind writes under Policy::Siblings = "
                << (cart ? cart->values.size() : 0) << " value(s)\n";
      if (!cart || cart->values.size() != 2) return 1;
    }  // the nodes stop here; only then is the callback freed
    long seen = lines.load();
    std::lock_guard<std::mutex> g(lock);
    std::cout << "logging: " << seen << " lines at INFO or below\n";
    if (!up.empty()) std::cout << "logging: e.g. " << up.front() << "\n";
    if (seen < 1 || up.empty() || above_info.load() != 0) return 1;
    std::cout << "logging: the callback saw a node come up, nothing above INFO\n";
  } catch (const kv::Error &e) {
    std::cerr << "logging: " << e.what() << "\n";
    return 1;
  }
  std::cout << "all checks passed\n";
  return 0;
}
