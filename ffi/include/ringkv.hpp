/*
 * ringkv.hpp: an idiomatic C++17 API over the C ABI (ringkv.h),
 * header-only, in namespace ringkv::hl (it does not clash with the cxx
 * bridge's ringkv::Cluster and ringkv::Client: a program may include
 * both).
 *
 * - Handles are move-only RAII classes (Cluster, Client, Scan); a
 *   moved-from handle is empty and safe to destroy.
 * - Every failing call throws ringkv::hl::Error, whose code() is the
 *   ringkv_result and what() the library's message.
 * - get returns std::optional<Object> (nullopt: no value); an Object holds
 *   every sibling (nullopt for a sibling that is a delete) and the causal
 *   context to write back with.
 * - scan returns a Scan, range-for-able, yielding each key as a
 *   std::vector<uint8_t> (a copy: the C key pointer dies at the next
 *   call). A Scan must be destroyed before the Cluster or Client it was
 *   made on.
 * - multi_get and multi_put return one BatchItem per key, in request
 *   order, with that key's status: one bad key does not hide the others.
 * - replace, erase and get_value are the C ABI's plain put, delete and
 *   get (read first, then write with that context); counter_add,
 *   counter_get, set_add, set_remove and set_members are the counters
 *   and sets.
 * - ClusterOptions sets the default conflict policy (Policy) and a log
 *   callback (a std::function the Cluster keeps alive, and calls from
 *   its nodes' threads, concurrently, until it is destroyed).
 *
 * Link the static library with -lstdc++ -lpthread -ldl -lm.
 */
#ifndef RINGKV_HPP
#define RINGKV_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ringkv.h"

namespace ringkv {
namespace hl {

using Bytes = std::vector<uint8_t>;

/// A consistency level (RINGKV_CONSISTENCY_*).
enum class Consistency : uint32_t {
  Default = RINGKV_CONSISTENCY_DEFAULT,
  One = RINGKV_CONSISTENCY_ONE,
  Two = RINGKV_CONSISTENCY_TWO,
  Quorum = RINGKV_CONSISTENCY_QUORUM,
  All = RINGKV_CONSISTENCY_ALL,
};

/// A conflict policy (RINGKV_POLICY_*).
enum class Policy : uint32_t {
  Lww = RINGKV_POLICY_LWW,
  Siblings = RINGKV_POLICY_SIBLINGS,
  PnCounter = RINGKV_POLICY_PNCOUNTER,
  GCounter = RINGKV_POLICY_GCOUNTER,
  OrSet = RINGKV_POLICY_ORSET,
  GSet = RINGKV_POLICY_GSET,
  TwoPSet = RINGKV_POLICY_TWOPSET,
};

/// A log level (RINGKV_LOG_*); a callback set at a level gets that level
/// and the ones below it (Error is the lowest).
enum class LogLevel : uint32_t {
  Error = RINGKV_LOG_ERROR,
  Warn = RINGKV_LOG_WARN,
  Info = RINGKV_LOG_INFO,
  Debug = RINGKV_LOG_DEBUG,
  Trace = RINGKV_LOG_TRACE,
};

/// What a failing call throws: the result code and the library's message.
class Error : public std::runtime_error {
 public:
  Error(ringkv_result code, const std::string &message)
      : std::runtime_error(std::string(ringkv_result_name(code)) + ": " + message), code_(code) {}
  ringkv_result code() const noexcept { return code_; }

 private:
  ringkv_result code_;
};

namespace detail {

/// This thread's last error message.
inline std::string last_error() {
  std::string buf(256, '\0');
  size_t len = 0;
  ringkv_result r = ringkv_last_error(&buf[0], buf.size(), &len);
  if (r == RINGKV_BUFFER_TOO_SMALL) {
    buf.assign(len + 1, '\0');
    r = ringkv_last_error(&buf[0], buf.size(), &len);
  }
  if (r != RINGKV_OK) return std::string();
  buf.resize(len);
  return buf;
}

inline void check(ringkv_result r) {
  if (r != RINGKV_OK) throw Error(r, last_error());
}

inline const uint8_t *ptr(std::string_view s) {
  return reinterpret_cast<const uint8_t *>(s.data());
}

inline Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

inline uint32_t millis(std::chrono::milliseconds t) {
  if (t.count() < 0 || t.count() > RINGKV_MAX_TIMEOUT_MS) {
    throw Error(RINGKV_INVALID_ARGUMENT, "timeout out of range");
  }
  return static_cast<uint32_t>(t.count());
}

struct BufFree {
  void operator()(ringkv_buf *b) const noexcept { ringkv_buf_free(b); }
};
struct ObjectFree {
  void operator()(ringkv_object *o) const noexcept { ringkv_object_free(o); }
};
struct BatchFree {
  void operator()(ringkv_batch *b) const noexcept { ringkv_batch_free(b); }
};
struct ScanFree {
  void operator()(ringkv_scan *s) const noexcept { ringkv_scan_free(s); }
};
struct ClusterFree {
  void operator()(ringkv_cluster *c) const noexcept { ringkv_cluster_free(c); }
};
struct ClientFree {
  void operator()(ringkv_client *c) const noexcept { ringkv_client_free(c); }
};
struct ClusterOptionsFree {
  void operator()(ringkv_cluster_options *o) const noexcept { ringkv_cluster_options_free(o); }
};
struct ClientOptionsFree {
  void operator()(ringkv_client_options *o) const noexcept { ringkv_client_options_free(o); }
};
struct SetFree {
  void operator()(ringkv_set *s) const noexcept { ringkv_set_free(s); }
};

inline Bytes take_buf(ringkv_buf *raw) {
  std::unique_ptr<ringkv_buf, BufFree> buf(raw);
  const uint8_t *d = ringkv_buf_data(buf.get());
  size_t n = ringkv_buf_len(buf.get());
  return n == 0 ? Bytes() : Bytes(d, d + n);
}

}  // namespace detail

/// A key's object: its values (siblings when more than one; nullopt for a
/// sibling that is a delete) and the context to write back with.
struct Object {
  std::vector<std::optional<Bytes>> values;
  Bytes context;

  /// Reads a C object (not taking it).
  static Object from(const ringkv_object *o) {
    Object out;
    size_t n = ringkv_object_count(o);
    out.values.reserve(n);
    for (size_t i = 0; i < n; i++) {
      const uint8_t *d = nullptr;
      size_t len = 0;
      ringkv_result r = ringkv_object_value(o, i, &d, &len);
      if (r == RINGKV_NOT_FOUND) {
        out.values.emplace_back(std::nullopt);
      } else {
        detail::check(r);
        out.values.emplace_back(len == 0 ? Bytes() : Bytes(d, d + len));
      }
    }
    const uint8_t *c = nullptr;
    size_t clen = 0;
    detail::check(ringkv_object_context(o, &c, &clen));
    if (clen != 0) out.context.assign(c, c + clen);
    return out;
  }
};

/// One key's answer in a batch: its status, and on RINGKV_OK its object
/// (multi_get; nullopt when the key has no value) or the context as
/// stored (multi_put).
struct BatchItem {
  ringkv_result status = RINGKV_OK;
  std::string message;  // the item's error message, empty on RINGKV_OK
  std::optional<Object> object;
  Bytes context;
  bool ok() const noexcept { return status == RINGKV_OK; }
};

/// One write of a multi_put.
struct Write {
  Bytes key;
  Bytes value;
  Bytes context;  // empty: a blind write
};

/// A scan of one bucket's keys (token order, not a snapshot). Range-for
/// over it once; each key is a copy. Destroy it before its handle.
class Scan {
 public:
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Bytes;
    using difference_type = std::ptrdiff_t;
    using pointer = const Bytes *;
    using reference = const Bytes &;

    iterator() = default;
    reference operator*() const { return scan_->key_; }
    pointer operator->() const { return &scan_->key_; }
    iterator &operator++() {
      if (!scan_->advance()) scan_ = nullptr;
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator &a, const iterator &b) { return a.scan_ == b.scan_; }
    friend bool operator!=(const iterator &a, const iterator &b) { return a.scan_ != b.scan_; }

   private:
    friend class Scan;
    explicit iterator(Scan *s) : scan_(s) {}
    Scan *scan_ = nullptr;
  };

  explicit Scan(ringkv_scan *raw) : scan_(raw) {}

  /// Reads the next key into `out`; false when the scan is over.
  bool next(Bytes &out) {
    if (!advance()) return false;
    out = key_;
    return true;
  }

  /// The keys given so far.
  uint64_t count() const noexcept { return ringkv_scan_count(scan_.get()); }

  iterator begin() {
    if (!started_) {
      started_ = true;
      if (!advance()) return end();
    } else if (done_) {
      return end();
    }
    return iterator(this);
  }
  iterator end() { return iterator(); }

 private:
  bool advance() {
    if (done_) return false;
    const uint8_t *k = nullptr;
    size_t len = 0;
    int done = 0;
    detail::check(ringkv_scan_next(scan_.get(), &k, &len, &done));
    if (done) {
      done_ = true;
      key_.clear();
      return false;
    }
    key_.assign(k, k + len);
    return true;
  }

  std::unique_ptr<ringkv_scan, detail::ScanFree> scan_;
  Bytes key_;
  bool started_ = false;
  bool done_ = false;
};

namespace detail {

template <class H>
struct Calls;

template <>
struct Calls<ringkv_cluster> {
  static constexpr auto get = &ringkv_cluster_get_object;
  static constexpr auto put = &ringkv_cluster_put_ctx;
  static constexpr auto del = &ringkv_cluster_delete_ctx;
  static constexpr auto scan = &ringkv_cluster_scan_new;
  static constexpr auto multi_get = &ringkv_cluster_multi_get;
  static constexpr auto multi_put = &ringkv_cluster_multi_put;
  static constexpr auto policy = &ringkv_cluster_set_bucket_policy;
  static constexpr auto plain_put = &ringkv_cluster_put;
  static constexpr auto plain_get = &ringkv_cluster_get;
  static constexpr auto plain_del = &ringkv_cluster_delete;
  static constexpr auto counter_add = &ringkv_cluster_counter_add;
  static constexpr auto counter_get = &ringkv_cluster_counter_get;
  static constexpr auto set_add = &ringkv_cluster_set_add;
  static constexpr auto set_remove = &ringkv_cluster_set_remove;
  static constexpr auto set_members = &ringkv_cluster_set_members;
};

template <>
struct Calls<ringkv_client> {
  static constexpr auto get = &ringkv_client_get_object;
  static constexpr auto put = &ringkv_client_put_ctx;
  static constexpr auto del = &ringkv_client_delete_ctx;
  static constexpr auto scan = &ringkv_client_scan_new;
  static constexpr auto multi_get = &ringkv_client_multi_get;
  static constexpr auto multi_put = &ringkv_client_multi_put;
  static constexpr auto policy = &ringkv_client_set_bucket_policy;
  static constexpr auto plain_put = &ringkv_client_put;
  static constexpr auto plain_get = &ringkv_client_get;
  static constexpr auto plain_del = &ringkv_client_delete;
  static constexpr auto counter_add = &ringkv_client_counter_add;
  static constexpr auto counter_get = &ringkv_client_counter_get;
  static constexpr auto set_add = &ringkv_client_set_add;
  static constexpr auto set_remove = &ringkv_client_set_remove;
  static constexpr auto set_members = &ringkv_client_set_members;
};

/// The calls Cluster and Client share, over the handle `H` owned by
/// `Free`.
template <class H, class Free>
class Store {
  using C = Calls<H>;

 public:
  using ms = std::chrono::milliseconds;

  /// The C handle (for calls this header does not wrap); NULL when moved
  /// from.
  H *raw() const noexcept { return h_.get(); }
  explicit operator bool() const noexcept { return h_ != nullptr; }

  /// The key's object, or nullopt when it has no value (never written,
  /// or deleted).
  std::optional<Object> get(std::string_view bucket, std::string_view key,
                            Consistency r = Consistency::Default, ms timeout = ms(0)) const {
    ringkv_object *raw = nullptr;
    check(C::get(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(),
                 static_cast<uint32_t>(r), millis(timeout), &raw));
    std::unique_ptr<ringkv_object, ObjectFree> o(raw);
    if (ringkv_object_count(o.get()) == 0) return std::nullopt;
    return Object::from(o.get());
  }
  std::optional<Object> get(std::string_view bucket, const Bytes &key,
                            Consistency r = Consistency::Default, ms timeout = ms(0)) const {
    return get(bucket, view(key), r, timeout);
  }

  /// Writes `value` with `context` (empty: a blind write); returns the
  /// context of the object as stored.
  Bytes put(std::string_view bucket, std::string_view key, std::string_view value,
            const Bytes &context = {}, Consistency w = Consistency::Default,
            ms timeout = ms(0)) const {
    ringkv_buf *out = nullptr;
    check(C::put(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(), ptr(value),
                 value.size(), context.data(), context.size(), static_cast<uint32_t>(w),
                 millis(timeout), &out));
    return take_buf(out);
  }
  Bytes put(std::string_view bucket, const Bytes &key, const Bytes &value,
            const Bytes &context = {}, Consistency w = Consistency::Default,
            ms timeout = ms(0)) const {
    return put(bucket, view(key), view(value), context, w, timeout);
  }

  /// Deletes the key with `context` (empty: a blind delete); returns the
  /// context of the object as stored.
  Bytes del(std::string_view bucket, std::string_view key, const Bytes &context = {},
            Consistency w = Consistency::Default, ms timeout = ms(0)) const {
    ringkv_buf *out = nullptr;
    check(C::del(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(), context.data(),
                 context.size(), static_cast<uint32_t>(w), millis(timeout), &out));
    return take_buf(out);
  }
  Bytes del(std::string_view bucket, const Bytes &key, const Bytes &context = {},
            Consistency w = Consistency::Default, ms timeout = ms(0)) const {
    return del(bucket, view(key), context, w, timeout);
  }

  /// A scan of the bucket's keys, `page_limit` per page (0: 100).
  Scan scan(std::string_view bucket, uint32_t page_limit = RINGKV_DEFAULT_SCAN_PAGE,
            Consistency r = Consistency::Default, ms timeout = ms(0)) const {
    ringkv_scan *raw = nullptr;
    check(C::scan(h_.get(), ptr(bucket), bucket.size(), page_limit, static_cast<uint32_t>(r),
                  millis(timeout), &raw));
    return Scan(raw);
  }

  /// Reads many keys; one item per key, in order (throws only when the
  /// batch as a whole is refused).
  std::vector<BatchItem> multi_get(std::string_view bucket, const std::vector<Bytes> &keys,
                                   Consistency r = Consistency::Default,
                                   ms timeout = ms(0)) const {
    std::vector<const uint8_t *> ps;
    std::vector<size_t> lens;
    for (const Bytes &k : keys) {
      ps.push_back(k.data());
      lens.push_back(k.size());
    }
    ringkv_batch *raw = nullptr;
    check(C::multi_get(h_.get(), ptr(bucket), bucket.size(), ps.data(), lens.data(), keys.size(),
                       static_cast<uint32_t>(r), millis(timeout), &raw));
    std::unique_ptr<ringkv_batch, BatchFree> batch(raw);
    std::vector<BatchItem> items(ringkv_batch_len(batch.get()));
    for (size_t i = 0; i < items.size(); i++) {
      const ringkv_object *o = nullptr;
      ringkv_result s = ringkv_batch_object(batch.get(), i, &o);
      items[i].status = s;
      if (s != RINGKV_OK) {
        items[i].message = last_error();
        continue;
      }
      if (ringkv_object_count(o) != 0) {
        items[i].object = Object::from(o);
        items[i].context = items[i].object->context;
      } else {
        items[i].context = Object::from(o).context;
      }
    }
    return items;
  }

  /// Writes many keys; one item per key, in order, with the context as
  /// stored (throws only when the batch as a whole is refused).
  std::vector<BatchItem> multi_put(std::string_view bucket, const std::vector<Write> &writes,
                                   Consistency w = Consistency::Default,
                                   ms timeout = ms(0)) const {
    std::vector<const uint8_t *> kp, vp, cp;
    std::vector<size_t> kl, vl, cl;
    for (const Write &x : writes) {
      kp.push_back(x.key.data());
      kl.push_back(x.key.size());
      vp.push_back(x.value.data());
      vl.push_back(x.value.size());
      cp.push_back(x.context.data());
      cl.push_back(x.context.size());
    }
    ringkv_batch *raw = nullptr;
    check(C::multi_put(h_.get(), ptr(bucket), bucket.size(), kp.data(), kl.data(), vp.data(),
                       vl.data(), cp.data(), cl.data(), writes.size(), static_cast<uint32_t>(w),
                       millis(timeout), &raw));
    std::unique_ptr<ringkv_batch, BatchFree> batch(raw);
    std::vector<BatchItem> items(ringkv_batch_len(batch.get()));
    for (size_t i = 0; i < items.size(); i++) {
      const uint8_t *d = nullptr;
      size_t len = 0;
      ringkv_result s = ringkv_batch_context(batch.get(), i, &d, &len);
      items[i].status = s;
      if (s != RINGKV_OK) {
        items[i].message = last_error();
      } else if (len != 0) {
        items[i].context.assign(d, d + len);
      }
    }
    return items;
  }

  /// Sets the bucket's policy (RINGKV_POLICY_*).
  void set_bucket_policy(std::string_view bucket, uint32_t policy) const {
    check(C::policy(h_.get(), ptr(bucket), bucket.size(), policy));
  }
  void set_bucket_policy(std::string_view bucket, Policy policy) const {
    set_bucket_policy(bucket, static_cast<uint32_t>(policy));
  }

  /// Writes `value`, replacing the value the key holds: reads the key's
  /// context first (at `w` as a read level), then writes with it, as the
  /// C ABI's ringkv_*_put. Under every policy a key written this way
  /// holds one value (unless another writer raced it).
  void replace(std::string_view bucket, std::string_view key, std::string_view value,
               Consistency w = Consistency::Default) const {
    check(C::plain_put(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(), ptr(value),
                       value.size(), static_cast<uint32_t>(w)));
  }
  void replace(std::string_view bucket, const Bytes &key, const Bytes &value,
               Consistency w = Consistency::Default) const {
    replace(bucket, view(key), view(value), w);
  }

  /// Deletes the key, replacing what it holds (reads first, as
  /// ringkv_*_delete).
  void erase(std::string_view bucket, std::string_view key,
             Consistency w = Consistency::Default) const {
    check(C::plain_del(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(),
                       static_cast<uint32_t>(w)));
  }
  void erase(std::string_view bucket, const Bytes &key,
             Consistency w = Consistency::Default) const {
    erase(bucket, view(key), w);
  }

  /// The key's one value, or nullopt when it has none (ringkv_*_get's
  /// RINGKV_NOT_FOUND). Siblings throw Error(RINGKV_SIBLINGS): read them
  /// with get.
  std::optional<Bytes> get_value(std::string_view bucket, std::string_view key,
                                 Consistency r = Consistency::Default) const {
    ringkv_buf *out = nullptr;
    ringkv_result res = C::plain_get(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(),
                                     static_cast<uint32_t>(r), &out);
    if (res == RINGKV_NOT_FOUND) return std::nullopt;
    check(res);
    return take_buf(out);
  }
  std::optional<Bytes> get_value(std::string_view bucket, const Bytes &key,
                                 Consistency r = Consistency::Default) const {
    return get_value(bucket, view(key), r);
  }

  /// Adds `by` (negative: subtracts, PNCOUNTER only) to the counter
  /// bucket/key (a PNCOUNTER or GCOUNTER bucket); returns its value after
  /// the add.
  int64_t counter_add(std::string_view bucket, std::string_view key, int64_t by,
                      Consistency w = Consistency::Default) const {
    int64_t value = 0;
    check(C::counter_add(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(), by,
                         static_cast<uint32_t>(w), &value));
    return value;
  }

  /// The counter's value (0 if never added to).
  int64_t counter_get(std::string_view bucket, std::string_view key,
                      Consistency r = Consistency::Default) const {
    int64_t value = 0;
    check(C::counter_get(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(),
                         static_cast<uint32_t>(r), &value));
    return value;
  }

  /// Adds `member` (may be empty) to the set bucket/key (an ORSET, GSET
  /// or TWOPSET bucket).
  void set_add(std::string_view bucket, std::string_view key, std::string_view member,
               Consistency w = Consistency::Default) const {
    check(C::set_add(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(), ptr(member),
                     member.size(), static_cast<uint32_t>(w)));
  }

  /// Removes `member` from the set (an ORSET or TWOPSET bucket).
  void set_remove(std::string_view bucket, std::string_view key, std::string_view member,
                  Consistency w = Consistency::Default) const {
    check(C::set_remove(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(),
                        ptr(member), member.size(), static_cast<uint32_t>(w)));
  }

  /// The set's members, in byte order (none if never added to).
  std::vector<Bytes> set_members(std::string_view bucket, std::string_view key,
                                 Consistency r = Consistency::Default) const {
    ringkv_set *raw = nullptr;
    check(C::set_members(h_.get(), ptr(bucket), bucket.size(), ptr(key), key.size(),
                         static_cast<uint32_t>(r), &raw));
    std::unique_ptr<ringkv_set, SetFree> set(raw);
    std::vector<Bytes> members(ringkv_set_len(set.get()));
    for (size_t i = 0; i < members.size(); i++) {
      const uint8_t *d = nullptr;
      size_t len = 0;
      check(ringkv_set_member(set.get(), i, &d, &len));
      if (len != 0) members[i].assign(d, d + len);
    }
    return members;
  }

 protected:
  Store() = default;
  explicit Store(H *h) : h_(h) {}

  static std::string_view view(const Bytes &b) {
    return std::string_view(reinterpret_cast<const char *>(b.data()), b.size());
  }

  std::unique_ptr<H, Free> h_;
};

}  // namespace detail

/// Transports and engines of an embedded cluster.
enum class Transport : uint32_t { Memory = RINGKV_TRANSPORT_MEMORY, Tcp = RINGKV_TRANSPORT_TCP };
enum class Engine : uint32_t {
  Memory = RINGKV_ENGINE_MEMORY,
  Lsm = RINGKV_ENGINE_LSM,
  Btree = RINGKV_ENGINE_BTREE,
};

/// A log callback: the level, the Rust module that logged (its target,
/// e.g. "ringkv::node::failure_detector") and the message (the text,
/// then the event's fields as " key=value"). The views are valid only
/// during the call: copy what you keep.
///
/// Thread safety: it is called from the nodes' threads, concurrently
/// with itself and with the program's own threads, from the Cluster's
/// constructor until its destructor returns (never after). It must be
/// thread-safe, return quickly and not call into this library (a
/// Cluster destroyed from it would deadlock). An exception it throws is
/// caught and dropped (it cannot cross into the library). The library's
/// subscriber is process-wide: with several clusters with callbacks in
/// one process, each callback gets the lines of all of them.
using LogCallback =
    std::function<void(LogLevel level, std::string_view target, std::string_view message)>;

/// How to make an embedded cluster; each unset field keeps the library's
/// default.
struct ClusterOptions {
  std::optional<std::string> data_dir;
  std::optional<Engine> engine;
  std::optional<uint32_t> vnodes;
  /// The default conflict policy of every bucket (default Siblings); a
  /// bucket's own (set_bucket_policy) overrides it.
  std::optional<Policy> policy;
  /// The log callback (empty: none), given the lines at `log_level` and
  /// below. The Cluster keeps its own copy alive while it lives.
  LogCallback log;
  LogLevel log_level = LogLevel::Info;
  /// The default bucket properties, set together: `n` replicas (1 to 5)
  /// and the levels `r` and `w` a Consistency::Default request uses
  /// (One to All; Default is refused).
  struct Replicas {
    uint32_t n;
    Consistency r;
    Consistency w;
  };
  std::optional<Replicas> replicas;
};

namespace detail {

/// The C trampoline of a LogCallback: user_data is the callback. Never
/// lets an exception out (the library's threads must not unwind).
inline void log_trampoline(void *user_data, uint32_t level, const char *target,
                           const char *message) noexcept {
  try {
    const auto *fn = static_cast<const LogCallback *>(user_data);
    (*fn)(static_cast<LogLevel>(level), target ? std::string_view(target) : std::string_view(),
          message ? std::string_view(message) : std::string_view());
  } catch (...) {
    // Dropped: see LogCallback.
  }
}

}  // namespace detail

/// An embedded cluster: real nodes in this process. Move-only; a log
/// callback given in its options lives as long as the nodes do.
class Cluster : public detail::Store<ringkv_cluster, detail::ClusterFree> {
 public:
  Cluster(Cluster &&) noexcept = default;
  /// Frees the cluster held before (its callback after it), then takes
  /// `other`'s.
  Cluster &operator=(Cluster &&other) noexcept {
    h_ = std::move(other.h_);
    log_ = std::move(other.log_);
    return *this;
  }
  /// Shuts the nodes down, and only then frees the log callback, which
  /// they may call until then.
  ~Cluster() { h_.reset(); }

  explicit Cluster(uint32_t nodes, Transport transport = Transport::Memory) {
    ringkv_cluster *raw = nullptr;
    detail::check(ringkv_cluster_new(nodes, static_cast<uint32_t>(transport), &raw));
    h_.reset(raw);
  }
  Cluster(uint32_t nodes, Transport transport, const ClusterOptions &o) {
    ringkv_cluster_options *rawo = nullptr;
    detail::check(ringkv_cluster_options_new(&rawo));
    std::unique_ptr<ringkv_cluster_options, detail::ClusterOptionsFree> opts(rawo);
    if (o.data_dir) detail::check(ringkv_cluster_options_set_data_dir(rawo, o.data_dir->c_str()));
    if (o.engine) {
      detail::check(ringkv_cluster_options_set_engine(rawo, static_cast<uint32_t>(*o.engine)));
    }
    if (o.vnodes) detail::check(ringkv_cluster_options_set_vnodes(rawo, *o.vnodes));
    if (o.replicas) {
      detail::check(ringkv_cluster_options_set_replicas(rawo, o.replicas->n,
                                                        static_cast<uint32_t>(o.replicas->r),
                                                        static_cast<uint32_t>(o.replicas->w)));
    }
    if (o.policy) {
      detail::check(ringkv_cluster_options_set_policy(rawo, static_cast<uint32_t>(*o.policy)));
    }
    // The callback's copy lives on the heap, at an address that moving
    // the Cluster does not change; `log` frees it if the cluster does not
    // start (by then ringkv_cluster_new_with has stopped calling it).
    std::unique_ptr<LogCallback> log;
    if (o.log) {
      log = std::make_unique<LogCallback>(o.log);
      detail::check(ringkv_cluster_options_set_log(rawo, &detail::log_trampoline, log.get(),
                                                   static_cast<uint32_t>(o.log_level)));
    }
    ringkv_cluster *raw = nullptr;
    detail::check(ringkv_cluster_new_with(nodes, static_cast<uint32_t>(transport), rawo, &raw));
    h_.reset(raw);
    log_ = std::move(log);
  }

  /// The nodes' client addresses, comma-separated (a TCP cluster's).
  std::string client_addrs() const {
    ringkv_buf *out = nullptr;
    detail::check(ringkv_cluster_client_addrs(h_.get(), &out));
    Bytes b = detail::take_buf(out);
    std::string s(b.begin(), b.end());
    while (!s.empty() && s.back() == '\0') s.pop_back();
    return s;
  }

 private:
  std::unique_ptr<LogCallback> log_;
};

/// How a client connects; each unset field keeps the library's default.
struct ClientOptions {
  std::optional<std::string> user, password;
  std::optional<std::string> tls_ca_pem;
  /// A file of CA certificates (PEM) to trust, read when the Client is
  /// made (ringkv_client_options_set_tls_ca_file). Set one of tls_ca_pem
  /// and tls_ca_file: with both, the file replaces the PEM.
  std::optional<std::string> tls_ca_file;
  std::optional<std::string> server_name;
  std::chrono::milliseconds connect_timeout{0};  // 0: the default (2 s)
  std::chrono::milliseconds request_timeout{0};  // 0: the default (6 s)
};

/// A connection to a running cluster.
class Client : public detail::Store<ringkv_client, detail::ClientFree> {
 public:
  explicit Client(const std::string &addrs, const ClientOptions &o = {}) {
    ringkv_client_options *rawo = nullptr;
    detail::check(ringkv_client_options_new(&rawo));
    std::unique_ptr<ringkv_client_options, detail::ClientOptionsFree> opts(rawo);
    if (o.user || o.password) {
      detail::check(ringkv_client_options_set_credentials(rawo, o.user.value_or("").c_str(),
                                                          o.password.value_or("").c_str()));
    }
    if (o.tls_ca_pem) {
      detail::check(ringkv_client_options_set_tls_ca_pem(rawo, detail::ptr(*o.tls_ca_pem),
                                                         o.tls_ca_pem->size()));
    }
    if (o.tls_ca_file) {
      detail::check(ringkv_client_options_set_tls_ca_file(rawo, o.tls_ca_file->c_str()));
    }
    if (o.server_name) {
      detail::check(ringkv_client_options_set_server_name(rawo, o.server_name->c_str()));
    }
    if (o.connect_timeout.count() != 0 || o.request_timeout.count() != 0) {
      detail::check(ringkv_client_options_set_timeout_ms(
          rawo, detail::millis(o.connect_timeout), detail::millis(o.request_timeout)));
    }
    ringkv_client *raw = nullptr;
    detail::check(ringkv_client_connect(addrs.c_str(), rawo, &raw));
    h_.reset(raw);
  }

  /// Closes the connection; later calls throw RINGKV_CLOSED.
  void close() const { detail::check(ringkv_client_close(h_.get())); }
};

/// The library's version text and ABI version.
inline std::string version() { return ringkv_version(); }
inline uint32_t abi_version() { return ringkv_abi_version(); }

}  // namespace hl
}  // namespace ringkv

#endif  // RINGKV_HPP
