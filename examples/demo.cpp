#include <cowq/cowq.hpp>
#include <cstdio>
cowq::task<int> leaf(int x) { co_return x * 2; }
cowq::task<int> root() {
  int s = 0;
  for (int i = 0; i < 10; ++i) s += co_await leaf(i);
  co_await cowq::yield();
  co_return s;
}
int main() {
  cowq::runtime rt;
  int r = cowq::sync_wait(rt, root());
  std::printf("%d\n%s", r, cowq::to_string(rt.stats()).c_str());
}
