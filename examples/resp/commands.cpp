// Command execution for resp_server (see commands.hpp).
#include "commands.hpp"

#include <climits>
#include <iterator>
#include <utility>

namespace resp {

namespace {

using args_t = std::vector<std::string_view>;

constexpr std::string_view not_integer = "value is not an integer or out of range";

void wrong_arity(reply_buffer& out, std::string_view lower_name) {
  std::string msg = "wrong number of arguments for '";
  msg += lower_name;
  msg += "' command";
  out.error(msg);
}

void unknown_command(reply_buffer& out, const args_t& argv) {
  // Redis 7's wording and truncation: the name up to 128 bytes, then the
  // arguments, quoted, while the list is shorter than 128 bytes.
  std::string msg = "unknown command '";
  msg += argv[0].substr(0, 128);
  msg += "', with args beginning with: ";
  std::string args;
  for (std::size_t i = 1; i < argv.size() && args.size() < 128; ++i) {
    const std::size_t room = 128 - args.size();
    args += '\'';
    args += argv[i].substr(0, room);
    args += "' ";
  }
  msg += args;
  out.error(msg);
}

void unknown_subcommand(reply_buffer& out, std::string_view sub, std::string_view cmd) {
  std::string msg = "unknown subcommand '";
  msg += sub.substr(0, 128);
  msg += "'. Try ";
  msg += cmd;
  msg += " HELP.";
  out.error(msg);
}

void fill_keys(session& s, const args_t& argv, std::size_t first, std::size_t step) {
  s.keys.clear();
  for (std::size_t i = first; i < argv.size(); i += step) s.keys.emplace_back(argv[i]);
}

void cmd_ping(const args_t& argv, reply_buffer& out) {
  if (argv.size() > 2) return wrong_arity(out, "ping");
  if (argv.size() == 2) return out.bulk(argv[1]);
  out.raw("+PONG\r\n");
}

void cmd_get(store& db, const args_t& argv, reply_buffer& out) {
  if (argv.size() != 2) return wrong_arity(out, "get");
  if (!db.get(hashed_key(argv[1]), [&](std::string_view v) { out.bulk(v); })) out.null_bulk();
}

void cmd_set(store& db, session& s, const args_t& argv, reply_buffer& out) {
  if (argv.size() < 3) return wrong_arity(out, "set");
  auto cond = store::set_cond::always;
  auto ttl = store::set_ttl::clear;
  bool has_expire = false, in_ms = false;
  std::string_view expire_arg;
  for (std::size_t j = 3; j < argv.size(); ++j) {
    const std::string_view opt = argv[j];
    const bool has_next = j + 1 < argv.size();
    if (iequals(opt, "NX") && cond != store::set_cond::if_present) {
      cond = store::set_cond::if_absent;
    } else if (iequals(opt, "XX") && cond != store::set_cond::if_absent) {
      cond = store::set_cond::if_present;
    } else if (iequals(opt, "KEEPTTL") && !has_expire) {
      ttl = store::set_ttl::keep;
    } else if ((iequals(opt, "EX") || iequals(opt, "PX")) && !has_expire &&
               ttl != store::set_ttl::keep && has_next) {
      has_expire = true;
      in_ms = opt[0] == 'P' || opt[0] == 'p';
      expire_arg = argv[++j];
    } else {
      return out.error("syntax error");
    }
  }
  std::int64_t expire_at = 0;
  if (has_expire) {
    std::int64_t n = 0;
    if (!parse_int64(expire_arg, n)) return out.error(not_integer);
    if (n <= 0 || (!in_ms && n > INT64_MAX / 1000)) return out.error("invalid expire time in 'set' command");
    const std::int64_t ms = in_ms ? n : n * 1000;
    const std::int64_t now = now_ms();
    if (ms > INT64_MAX - now) return out.error("invalid expire time in 'set' command");
    expire_at = now + ms;
    ttl = store::set_ttl::set;
  }
  if (!db.set(hashed_key(argv[1]), argv[2], cond, ttl, expire_at)) return out.null_bulk();
  if (has_expire) s.added_deadline = true;
  out.ok();
}

void cmd_incr_by(store& db, const args_t& argv, reply_buffer& out, std::int64_t delta) {
  std::int64_t result = 0;
  switch (db.incr_by(hashed_key(argv[1]), delta, result)) {
    case store::incr_status::ok: return out.integer(result);
    case store::incr_status::not_integer: return out.error(not_integer);
    case store::incr_status::overflow: return out.error("increment or decrement would overflow");
  }
}

void cmd_incrby_arg(store& db, const args_t& argv, reply_buffer& out, bool negate) {
  if (argv.size() != 3) return wrong_arity(out, negate ? "decrby" : "incrby");
  std::int64_t delta = 0;
  if (!parse_int64(argv[2], delta)) return out.error(not_integer);
  if (negate) {
    if (delta == INT64_MIN) return out.error("decrement would overflow");
    delta = -delta;
  }
  cmd_incr_by(db, argv, out, delta);
}

void cmd_mget(store& db, session& s, const args_t& argv, reply_buffer& out) {
  if (argv.size() < 2) return wrong_arity(out, "mget");
  fill_keys(s, argv, 1, 1);
  out.array(s.keys.size());
  db.mget(s.keys, [&](std::size_t, const std::string_view* v) {
    if (v != nullptr) {
      out.bulk(*v);
    } else {
      out.null_bulk();
    }
  });
}

void cmd_mset(store& db, session& s, const args_t& argv, reply_buffer& out) {
  if (argv.size() < 3 || argv.size() % 2 == 0) return wrong_arity(out, "mset");
  fill_keys(s, argv, 1, 2);
  s.values.clear();
  for (std::size_t i = 2; i < argv.size(); i += 2) s.values.push_back(argv[i]);
  db.mset(s.keys, s.values);
  out.ok();
}

void cmd_config(const args_t& argv, reply_buffer& out) {
  if (argv.size() < 2) return wrong_arity(out, "config");
  if (iequals(argv[1], "GET")) {
    if (argv.size() < 3) return wrong_arity(out, "config|get");
    // What redis-benchmark asks for (persistence: none here), answered
    // as a Redis without persistence would.
    static constexpr std::pair<std::string_view, std::string_view> known[] = {
        {"save", ""}, {"appendonly", "no"}};
    bool match[std::size(known)] = {};
    std::size_t n = 0;
    for (std::size_t i = 2; i < argv.size(); ++i)
      for (std::size_t k = 0; k < std::size(known); ++k)
        if (!match[k] && (argv[i] == "*" || iequals(argv[i], known[k].first))) {
          match[k] = true;
          ++n;
        }
    out.array(2 * n);
    for (std::size_t k = 0; k < std::size(known); ++k)
      if (match[k]) {
        out.bulk(known[k].first);
        out.bulk(known[k].second);
      }
    return;
  }
  if (iequals(argv[1], "RESETSTAT") && argv.size() == 2) return out.ok();
  unknown_subcommand(out, argv[1], "CONFIG");
}

void cmd_command(const args_t& argv, reply_buffer& out) {
  // No command table to describe; clients then fall back to no hints.
  if (argv.size() >= 2 && iequals(argv[1], "COUNT")) return out.integer(0);
  out.array(0);
}

void cmd_select(const args_t& argv, reply_buffer& out) {
  if (argv.size() != 2) return wrong_arity(out, "select");
  std::int64_t db = 0;
  if (!parse_int64(argv[1], db)) return out.error(not_integer);
  if (db != 0) return out.error("DB index is out of range");
  out.ok();
}

void cmd_client(session& s, const args_t& argv, reply_buffer& out) {
  if (argv.size() < 2) return wrong_arity(out, "client");
  const std::string_view sub = argv[1];
  if (iequals(sub, "SETNAME")) {
    if (argv.size() != 3) return wrong_arity(out, "client|setname");
    for (char c : argv[2])
      if (c < '!' || c > '~')
        return out.error("Client names cannot contain spaces, newlines or special characters.");
    s.name.assign(argv[2]);
    return out.ok();
  }
  if (iequals(sub, "GETNAME") && argv.size() == 2) {
    if (s.name.empty()) return out.null_bulk();
    return out.bulk(s.name);
  }
  if (iequals(sub, "ID") && argv.size() == 2) return out.integer(static_cast<std::int64_t>(s.id));
  // Redis 7.2 clients announce their library; nothing to keep here.
  if (iequals(sub, "SETINFO") && argv.size() == 4) return out.ok();
  unknown_subcommand(out, sub, "CLIENT");
}

void cmd_hello(session& s, const args_t& argv, reply_buffer& out) {
  if (argv.size() >= 2) {
    std::int64_t ver = 0;
    if (!parse_int64(argv[1], ver)) return out.error("Protocol version is not an integer or out of range");
    // RESP3 is not spoken here: Redis's answer to a version it lacks.
    if (ver != 2) return out.error_code("NOPROTO unsupported protocol version");
    for (std::size_t j = 2; j < argv.size(); ++j) {
      if (iequals(argv[j], "SETNAME") && j + 1 < argv.size()) {
        s.name.assign(argv[++j]);
      } else {
        std::string msg = "Syntax error in HELLO option '";
        msg += argv[j].substr(0, 128);
        msg += "'";
        return out.error(msg);
      }
    }
  }
  out.array(14);
  out.bulk("server");
  out.bulk("redis");
  out.bulk("version");
  out.bulk("7.0.0");
  out.bulk("proto");
  out.integer(2);
  out.bulk("id");
  out.integer(static_cast<std::int64_t>(s.id));
  out.bulk("mode");
  out.bulk("standalone");
  out.bulk("role");
  out.bulk("master");
  out.bulk("modules");
  out.array(0);
}

// Upper-cases the first byte of a command name, for the dispatch switch.
char upper(char c) noexcept { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }

}  // namespace

void execute(store& db, session& s, const std::vector<std::string_view>& argv, reply_buffer& out) {
  const std::string_view name = argv[0];
  // By length, then first letter: the hot commands cost one or two
  // comparisons.
  switch (name.size()) {
    case 3:
      if (iequals(name, "GET")) return cmd_get(db, argv, out);
      if (iequals(name, "SET")) return cmd_set(db, s, argv, out);
      if (iequals(name, "DEL")) {
        if (argv.size() < 2) return wrong_arity(out, "del");
        fill_keys(s, argv, 1, 1);
        return out.integer(static_cast<std::int64_t>(db.del(s.keys)));
      }
      if (iequals(name, "TTL")) {
        if (argv.size() != 2) return wrong_arity(out, "ttl");
        const std::int64_t ms = db.pttl(hashed_key(argv[1]));
        return out.integer(ms < 0 ? ms : (ms + 500) / 1000);
      }
      break;
    case 4:
      switch (upper(name[0])) {
        case 'P':
          if (iequals(name, "PING")) return cmd_ping(argv, out);
          if (iequals(name, "PTTL")) {
            if (argv.size() != 2) return wrong_arity(out, "pttl");
            return out.integer(db.pttl(hashed_key(argv[1])));
          }
          break;
        case 'E':
          if (iequals(name, "ECHO")) {
            if (argv.size() != 2) return wrong_arity(out, "echo");
            return out.bulk(argv[1]);
          }
          break;
        case 'I':
          if (iequals(name, "INCR")) {
            if (argv.size() != 2) return wrong_arity(out, "incr");
            return cmd_incr_by(db, argv, out, 1);
          }
          break;
        case 'D':
          if (iequals(name, "DECR")) {
            if (argv.size() != 2) return wrong_arity(out, "decr");
            return cmd_incr_by(db, argv, out, -1);
          }
          break;
        case 'M':
          if (iequals(name, "MGET")) return cmd_mget(db, s, argv, out);
          if (iequals(name, "MSET")) return cmd_mset(db, s, argv, out);
          break;
        case 'Q':
          if (iequals(name, "QUIT")) {
            s.close_after_reply = true;
            return out.ok();
          }
          break;
        default:
          break;
      }
      break;
    case 5:
      if (iequals(name, "HELLO")) return cmd_hello(s, argv, out);
      break;
    case 6:
      if (iequals(name, "EXISTS")) {
        if (argv.size() < 2) return wrong_arity(out, "exists");
        fill_keys(s, argv, 1, 1);
        return out.integer(static_cast<std::int64_t>(db.exists(s.keys)));
      }
      if (iequals(name, "INCRBY")) return cmd_incrby_arg(db, argv, out, false);
      if (iequals(name, "DECRBY")) return cmd_incrby_arg(db, argv, out, true);
      if (iequals(name, "CONFIG")) return cmd_config(argv, out);
      if (iequals(name, "SELECT")) return cmd_select(argv, out);
      if (iequals(name, "DBSIZE")) {
        if (argv.size() != 1) return wrong_arity(out, "dbsize");
        return out.integer(static_cast<std::int64_t>(db.size()));
      }
      if (iequals(name, "CLIENT")) return cmd_client(s, argv, out);
      break;
    case 7:
      if (iequals(name, "COMMAND")) return cmd_command(argv, out);
      if (iequals(name, "FLUSHDB")) {
        db.clear();
        return out.ok();
      }
      break;
    case 8:
      if (iequals(name, "FLUSHALL")) {
        db.clear();
        return out.ok();
      }
      break;
    default:
      break;
  }
  unknown_command(out, argv);
}

}  // namespace resp
