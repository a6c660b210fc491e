// resp_server's network side: the accept loop, one coroutine per
// connection, and the sweep that removes expired keys nobody touches.
//
// A connection reads, runs every complete request in what it read, in
// order, and sends all their replies with one send; it reads again only
// once that send is done. Memory per connection is therefore bounded: the
// input by parser_limits::max_request_len, the output by one batch (a
// batch is cut and sent once its replies reach flush_bytes) plus at most
// one reply (which is as large as the values it returns).
#pragma once

#include "commands.hpp"
#include "protocol.hpp"
#include "store.hpp"

#include <cowq/cowq.hpp>
#include <cowq/net.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <stop_token>

namespace resp {

struct server_options {
  parser_limits limits{};
  // Close a connection idle this long (Redis's `timeout`); 0: never. It
  // also bounds one send: a client that stops reading its replies for
  // this long is closed too.
  std::chrono::seconds idle_timeout{0};
  // How often the sweep looks for expired keys while some key has a
  // deadline (Redis's active expiry runs at hz 10). With no deadline set
  // the sweep is not scheduled at all.
  std::chrono::milliseconds sweep_interval{100};
  // Expired keys one sweep removes from one shard before it lets other
  // work run (keeps a shard lock short; the sweep goes on at once).
  std::size_t sweep_budget = 200;
  // A batch of replies is sent once it reaches this size, before the rest
  // of the requests already read are run.
  std::size_t flush_bytes = std::size_t{64} << 10;
  // A connection's read buffer starts at this size and returns to it after
  // a large request.
  std::size_t read_buffer = std::size_t{16} << 10;
};

// Thread safety: serve/accept_loop run as coroutines on the runtime's
// workers; stop() may be called from any thread.
class server {
 public:
  server(cowq::runtime& rt, server_options opts);
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Accepts until stop(), spawning serve() on system_wq for each connection.
  cowq::task<void> accept_loop(cowq::net::tcp_listener& l);
  // Ends the accept loop and the sweep, and shuts every open connection's
  // socket down so that its coroutine sees end of input and finishes. The
  // caller then shuts the runtime down, which waits for them.
  void stop();

  store& data() noexcept { return db_; }

 private:
  // Links a live connection's socket into the registry stop() walks.
  struct conn_link {
    conn_link* prev = nullptr;
    conn_link* next = nullptr;
    int fd = -1;
  };

  cowq::task<void> serve(cowq::net::stream s);
  cowq::task<void> sweep();
  void maybe_start_sweep();
  bool enlist(conn_link& c);
  void delist(conn_link& c);

  cowq::runtime& rt_;
  server_options opts_;
  store db_;
  std::stop_source stop_;
  std::atomic<std::uint64_t> next_id_{1};

  // registry_mu_ protects registry_ (the list head) and stopping_.
  std::mutex registry_mu_;
  conn_link registry_;
  bool stopping_ = false;
};

}  // namespace resp
