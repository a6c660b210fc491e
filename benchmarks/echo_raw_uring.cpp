// A minimal echo server on raw liburing: one thread, one ring. The
// reference point for the TCP echo benchmark (what this machine can do
// with io_uring and no runtime at all).
//
//   echo_raw_uring [--port N] [--cpu C] [--address A] [--setup defer|coop|plain]
//
// Same protocol as examples/echo_server: per connection, recv into a 16 KiB
// buffer, send all of it (resubmitting short sends), recv again. One
// multishot accept. Each loop iteration submits what the last completions
// prepared and waits for at least one more in the same io_uring_enter.
//
// --setup: defer (default) IORING_SETUP_SINGLE_ISSUER|DEFER_TASKRUN, the
// recommended set-up for one thread owning a ring; coop
// IORING_SETUP_COOP_TASKRUN|TASKRUN_FLAG (what cowq's pool rings use);
// plain: no flags. Falls back to the next one if the kernel refuses.
//
// Prints "listening on ADDRESS:PORT" once ready; SIGINT/SIGTERM end it.
#include <liburing.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr unsigned kEntries = 1024;
constexpr std::size_t kBuf = 16384;
constexpr std::uint64_t kAcceptUd = 1;

struct conn {
  int fd;
  unsigned len;   // bytes received, being sent
  unsigned sent;  // of len
  unsigned char buf[kBuf];
};

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

io_uring g_ring;

io_uring_sqe* get_sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&g_ring);
  while (sqe == nullptr) {
    io_uring_submit(&g_ring);
    sqe = io_uring_get_sqe(&g_ring);
  }
  return sqe;
}

void arm_accept(int lfd) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_multishot_accept(sqe, lfd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, kAcceptUd);
}

void arm_recv(conn* c) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_recv(sqe, c->fd, c->buf, kBuf, 0);
  io_uring_sqe_set_data(sqe, c);  // low bit 0: recv
}

void arm_send(conn* c) {
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_send(sqe, c->fd, c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<std::uint64_t>(c) | 1u);  // low bit 1: send
}

void drop(conn* c) {
  ::close(c->fd);
  delete c;
}

int usage(const char* a0) {
  std::fprintf(stderr, "usage: %s [--port N] [--cpu C] [--address A] [--setup defer|coop|plain]\n", a0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 7001;
  int cpu = -1;
  std::string address = "127.0.0.1";
  std::string setup = "defer";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage(argv[0]);
    if (a == "--port") port = std::atoi(argv[++i]);
    else if (a == "--cpu") cpu = std::atoi(argv[++i]);
    else if (a == "--address") address = argv[++i];
    else if (a == "--setup") setup = argv[++i];
    else return usage(argv[0]);
  }
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      std::perror("sched_setaffinity");
      return 1;
    }
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const unsigned flag_sets[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      0u,
  };
  const char* names[] = {"defer", "coop", "plain"};
  int first = setup == "defer" ? 0 : setup == "coop" ? 1 : setup == "plain" ? 2 : -1;
  if (first < 0) return usage(argv[0]);
  int rc = -EINVAL;
  int used = first;
  for (; used < 3; ++used) {
    io_uring_params p{};
    p.flags = flag_sets[used] | IORING_SETUP_CQSIZE;
    p.cq_entries = kEntries * 8;
    rc = io_uring_queue_init_params(kEntries, &g_ring, &p);
    if (rc == 0) break;
  }
  if (rc < 0) {
    std::fprintf(stderr, "io_uring_queue_init: %s\n", std::strerror(-rc));
    return 1;
  }

  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &sin.sin_addr) != 1) {
    std::fprintf(stderr, "bad address %s\n", address.c_str());
    return 2;
  }
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 || ::listen(lfd, SOMAXCONN) != 0) {
    std::fprintf(stderr, "bind/listen %s:%d: %s\n", address.c_str(), port, std::strerror(errno));
    return 1;
  }
  socklen_t sl = sizeof sin;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&sin), &sl);
  char abuf[64];
  inet_ntop(AF_INET, &sin.sin_addr, abuf, sizeof abuf);
  std::printf("listening on %s:%u (ring set-up: %s)\n", abuf, ntohs(sin.sin_port), names[used]);
  std::fflush(stdout);

  arm_accept(lfd);
  while (!g_stop) {
    const int r = io_uring_submit_and_wait(&g_ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      std::fprintf(stderr, "io_uring_submit_and_wait: %s\n", std::strerror(-r));
      return 1;
    }
    io_uring_cqe* cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&g_ring, head, cqe) {
      ++n;
      const std::uint64_t ud = cqe->user_data;
      const int res = cqe->res;
      if (ud == kAcceptUd) {
        if (res >= 0) {
          setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn* c = new conn;
          c->fd = res;
          c->len = c->sent = 0;
          arm_recv(c);
        } else if (res != -ECANCELED) {
          std::fprintf(stderr, "accept: %s\n", std::strerror(-res));
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept(lfd);
        continue;
      }
      conn* c = reinterpret_cast<conn*>(ud & ~std::uint64_t{1});
      if ((ud & 1) == 0) {  // recv
        if (res <= 0) {
          drop(c);
          continue;
        }
        c->len = static_cast<unsigned>(res);
        c->sent = 0;
        arm_send(c);
      } else {  // send
        if (res < 0) {
          drop(c);
          continue;
        }
        c->sent += static_cast<unsigned>(res);
        if (c->sent < c->len) arm_send(c);
        else arm_recv(c);
      }
    }
    io_uring_cq_advance(&g_ring, n);
  }
  io_uring_queue_exit(&g_ring);
  ::close(lfd);
  std::printf("stopped\n");
  return 0;
}
