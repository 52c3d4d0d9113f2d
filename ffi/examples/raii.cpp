// The C++17 RAII API (ffi/include/ringkv.hpp) on a durable embedded
// cluster: a shopping cart written from two places at once becomes two
// siblings, which the program merges and writes back with the context it
// read; then a batch, a scan, and the cluster reopened on its directory.
//
// Build (from the repository root, after cargo build --release -p ringkv-ffi):
//   c++ -std=c++17 -Wall -Wextra -Werror -I ffi/include ffi/examples/raii.cpp
//       target/release/libringkv_ffi.a -lpthread -ldl -lm -o raii
// (one line). Run with a directory it may create: ./raii /tmp/raii-data
#include <chrono>
#include <iostream>
#include <set>
#include <string>

#include "ringkv.hpp"

namespace kv = ringkv::hl;
using namespace std::chrono_literals;

static std::string text(const kv::Bytes &b) { return std::string(b.begin(), b.end()); }

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: raii DATA_DIR\n";
    return 2;
  }
  kv::ClusterOptions options;
  options.data_dir = argv[1];
  options.engine = kv::Engine::Lsm;
  try {
    {
      kv::Cluster cluster(3, kv::Transport::Memory, options);
      // Two blind writes of one key: under the default policy both stay.
      cluster.put("carts", "ada", "apple");
      cluster.put("carts", "ada", "pear");
      std::optional<kv::Object> cart = cluster.get("carts", "ada", kv::Consistency::Quorum, 500ms);
      if (!cart) return 1;
      std::set<std::string> items;
      for (const auto &v : cart->values) {
        if (v) items.insert(text(*v));
      }
      std::cout << "raii: carts/ada has " << cart->values.size() << " values\n";
      std::string merged;
      for (const auto &i : items) merged += (merged.empty() ? "" : ",") + i;
      cluster.put("carts", "ada", merged, cart->context);  // replaces both
      std::cout << "raii: merged to " << text(cluster.get("carts", "ada")->values.at(0).value())
                << "\n";
      std::vector<kv::Write> writes;
      for (std::string who : {"bob", "cy", "dee"}) {
        writes.push_back({kv::Bytes(who.begin(), who.end()), kv::Bytes{'p', 'l', 'u', 'm'}, {}});
      }
      for (const kv::BatchItem &item : cluster.multi_put("carts", writes)) {
        if (item.status != RINGKV_OK) return 1;
      }
      size_t keys = 0;
      for (const kv::Bytes &key : cluster.scan("carts", 2)) {
        (void)key;
        keys++;
      }
      std::cout << "raii: scan listed " << keys << " carts\n";
    }  // the cluster shuts down here, flushing its engines
    kv::Cluster again(3, kv::Transport::Memory, options);
    std::optional<kv::Object> cart = again.get("carts", "ada", kv::Consistency::Quorum);
    if (!cart || cart->values.size() != 1) return 1;
    std::cout << "raii: after reopening, carts/ada = " << text(cart->values[0].value()) << "\n";
    try {
      again.get("", "k");
    } catch (const kv::Error &e) {
      std::cout << "raii: an empty bucket is " << ringkv_result_name(e.code()) << "\n";
    }
  } catch (const kv::Error &e) {
    std::cerr << "raii: " << e.what() << "\n";
    return 1;
  }
  std::cout << "all checks passed\n";
  return 0;
}
