#include "resolver.hpp"

#include "../runtime/runtime_impl.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <pthread.h>

namespace cowq::detail {

resolver_thread::resolver_thread(std::string name) : name_(std::move(name)) {
  thread_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), name_.substr(0, 15).c_str());
    run();
  });
}

resolver_thread::~resolver_thread() { stop(); }

void resolver_thread::post(resolve_awaitable* job) {
  {
    std::lock_guard g(mu_);
    if (!stop_) {
      jobs_.push_back(job);
      cv_.notify_one();
      return;
    }
  }
  job->error = std::make_error_code(std::errc::operation_canceled);
  job->op.pool_->complete_from_outside(&job->op, 0);
}

void resolver_thread::stop() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void resolver_thread::run() {
  asio::io_context ctx;  // the synchronous resolver needs one; never run
  asio::ip::tcp::resolver resolver(ctx);
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;
    resolve_awaitable* job = jobs_.front();
    jobs_.pop_front();
    lk.unlock();
    asio::error_code ec;
    auto found = resolver.resolve(job->host, job->service, ec);
    if (ec) {
      job->error = ec;
    } else {
      for (const auto& e : found) job->results.push_back(e.endpoint());
    }
    job->op.pool_->complete_from_outside(&job->op, 0);
    lk.lock();
  }
}

void resolve_awaitable::await_suspend(std::coroutine_handle<> h) {
  worker* w = current_worker();
  pwq* q = current_pwq();
  if (w == nullptr || q == nullptr)
    throw std::logic_error("cowq: resolve must be awaited on a cowq worker");
  op.handle_ = h;
  op.pool_ = w->pool_;
  op.pwq_ = q;
  w->pool_->rt_->resolver().post(this);
}

}  // namespace cowq::detail
