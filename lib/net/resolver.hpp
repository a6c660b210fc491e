// Name resolution off the workers: one thread per runtime runs getaddrinfo.
#pragma once

#include "../pool/pool.hpp"

#include <cowq/net.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace cowq::detail {

struct resolve_awaitable;

// Thread safety: post() from any thread; stop() once, from shutdown.
class resolver_thread {
 public:
  explicit resolver_thread(std::string name);
  ~resolver_thread();
  void post(resolve_awaitable* job);
  void stop();

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<resolve_awaitable*> jobs_;  // mu_
  bool stop_ = false;                    // mu_
  std::string name_;
  std::thread thread_;
};

struct resolve_awaitable {
  resolve_awaitable(std::string h, std::string s) : host(std::move(h)), service(std::move(s)) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

  std::string host, service;
  std::vector<net::tcp_endpoint> results;
  std::error_code error;
  io_op op;
};

}  // namespace cowq::detail
