// Live stats on a Unix socket: one plain thread of the runtime answers each
// "stats" line with one JSON snapshot line. docs/monitoring.md has the
// protocol; tools/cowq_monitor.py is its client.
//
// The thread sleeps in poll() on the listening socket, its clients and an
// eventfd that stop() writes, so it costs nothing while nobody asks. It is
// not a worker and is not pinned: answering a monitor never takes a pool's
// CPU from its items beyond what the scheduler gives it. Clients cannot hold
// it up: every socket is non-blocking, a client has at most one answer
// queued (its next request is read only once that answer is sent), and one
// that takes none of it for a while is dropped.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>
#include <thread>

namespace cowq::detail {

struct runtime_impl;

// Appends s as a JSON string: quoted, with quotes, backslashes and control
// characters escaped, and each byte that is not part of valid UTF-8 turned
// into U+FFFD (names are user-given bytes; a JSON text must be UTF-8).
void append_json_string(std::string& out, std::string_view s);

// Thread safety: start() from the runtime's constructor, stop() (or the
// destructor) from its shutdown; nothing else touches it.
class stats_server {
 public:
  // The socket named by runtime_options::stats_socket or, if that is empty,
  // by COWQ_STATS_SOCKET; a leading '@' names a Linux abstract socket.
  // Returns null if neither names one, or, after a warning in the log, if
  // the socket cannot be set up: a missing monitor never stops a runtime.
  static std::unique_ptr<stats_server> start(runtime_impl& rt);

  ~stats_server();
  stats_server(const stats_server&) = delete;
  stats_server& operator=(const stats_server&) = delete;

  // Wakes the thread, which closes every connection and removes the socket
  // file (if it is still ours), and joins it. Idempotent.
  void stop();

 private:
  struct client;
  stats_server(runtime_impl& rt, std::string shown_path, std::string file_path, int listen_fd);
  void main();
  std::string snapshot() const;
  void answer(client& c, std::string_view request) const;
  bool serve(client& c) const;
  void remove_socket_file() const;

  runtime_impl& rt_;
  std::string shown_path_;  // as configured, for the log
  std::string file_path_;   // absolute path of the socket file; empty if abstract
  dev_t file_dev_ = 0;      // identity of the file bind() made, so stop()
  ino_t file_ino_ = 0;      // never removes one that replaced it
  int listen_fd_ = -1;      // owned by the thread once started
  int wake_fd_ = -1;        // eventfd: stop() writes, the thread's poll wakes
  std::thread thread_;
};

}  // namespace cowq::detail
