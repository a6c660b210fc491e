// Which CPUs and NUMA nodes the runtime may use.
#include "runtime_impl.hpp"

#include <algorithm>
#include <cctype>
#include <dirent.h>
#include <fstream>
#include <sched.h>
#include <stdexcept>
#include <string>

namespace cowq {

std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> out;
  std::size_t i = 0;
  auto number = [&]() -> int {
    if (i >= text.size() || !std::isdigit(static_cast<unsigned char>(text[i])))
      throw std::invalid_argument("cowq: bad CPU list '" + text + "'");
    long v = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      v = v * 10 + (text[i++] - '0');
      if (v >= CPU_SETSIZE) throw std::invalid_argument("cowq: CPU number too large in '" + text + "'");
    }
    return static_cast<int>(v);
  };
  while (i < text.size()) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    int lo = number();
    int hi = lo;
    if (i < text.size() && text[i] == '-') {
      ++i;
      hi = number();
      if (hi < lo) throw std::invalid_argument("cowq: bad CPU range in '" + text + "'");
    }
    for (int c = lo; c <= hi; ++c) out.push_back(c);
    if (i < text.size() && text[i] == ',') ++i;
    else if (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i])))
      throw std::invalid_argument("cowq: bad CPU list '" + text + "'");
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

namespace detail {

topology discover_topology(const std::vector<int>& requested) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) != 0)
    throw std::system_error(errno, std::generic_category(), "cowq: sched_getaffinity");

  topology t;
  if (requested.empty()) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &allowed)) t.cpus.push_back(c);
  } else {
    for (int c : requested) {
      if (c < 0 || c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed))
        throw std::invalid_argument("cowq: CPU " + std::to_string(c) +
                                    " is not in this process's affinity mask");
      t.cpus.push_back(c);
    }
    std::sort(t.cpus.begin(), t.cpus.end());
    t.cpus.erase(std::unique(t.cpus.begin(), t.cpus.end()), t.cpus.end());
  }
  if (t.cpus.empty()) throw std::invalid_argument("cowq: no CPU to run on");

  // NUMA nodes from sysfs; without it everything is node 0.
  std::vector<std::pair<int, std::vector<int>>> sys_nodes;
  if (DIR* d = ::opendir("/sys/devices/system/node")) {
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.rfind("node", 0) != 0 || name.size() == 4 ||
          !std::all_of(name.begin() + 4, name.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }))
        continue;
      std::ifstream f("/sys/devices/system/node/" + name + "/cpulist");
      std::string list;
      std::getline(f, list);
      try {
        sys_nodes.emplace_back(std::stoi(name.substr(4)), parse_cpu_list(list));
      } catch (const std::exception&) {
        // An unreadable node is treated as absent.
      }
    }
    ::closedir(d);
  }
  std::sort(sys_nodes.begin(), sys_nodes.end());

  t.node_of_cpu.assign(t.cpus.size(), -1);
  for (auto& [id, node_cpus] : sys_nodes) {
    std::vector<int> mine;
    for (std::size_t i = 0; i < t.cpus.size(); ++i) {
      if (std::find(node_cpus.begin(), node_cpus.end(), t.cpus[i]) != node_cpus.end()) {
        t.node_of_cpu[i] = static_cast<int>(t.nodes.size());
        mine.push_back(t.cpus[i]);
      }
    }
    if (!mine.empty()) t.nodes.push_back(std::move(mine));
  }
  // CPUs sysfs did not place (or no sysfs) form one more node.
  std::vector<int> rest;
  for (std::size_t i = 0; i < t.cpus.size(); ++i)
    if (t.node_of_cpu[i] < 0) {
      t.node_of_cpu[i] = static_cast<int>(t.nodes.size());
      rest.push_back(t.cpus[i]);
    }
  if (!rest.empty()) t.nodes.push_back(std::move(rest));
  return t;
}

}  // namespace detail
}  // namespace cowq
