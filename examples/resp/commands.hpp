// The commands resp_server understands: one call runs one parsed request
// against the store and appends its reply.
//
// Data: PING, ECHO, SET (EX, PX, NX, XX, KEEPTTL), GET, DEL, EXISTS, INCR,
// INCRBY, DECR, DECRBY, MGET, MSET, TTL, PTTL, DBSIZE, FLUSHDB, FLUSHALL.
// Connection housekeeping that stock clients send: QUIT, SELECT 0, CLIENT
// SETNAME/GETNAME/ID/SETINFO, HELLO [2] (3 gets -NOPROTO: RESP2 only),
// CONFIG GET save|appendonly (what redis-benchmark asks), COMMAND (empty).
// Replies and error texts are Redis 7.0's.
#pragma once

#include "protocol.hpp"
#include "store.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace resp {

// Per-connection state that commands read or change.
//
// Thread safety: none; one per connection.
struct session {
  std::uint64_t id = 0;
  std::string name;                 // CLIENT SETNAME
  bool close_after_reply = false;   // QUIT
  // Set when a command gave a key a deadline: the server then makes sure a
  // sweep is scheduled.
  bool added_deadline = false;
  // Scratch for multi-key commands, kept so that they do not allocate per
  // call once warm.
  std::vector<hashed_key> keys;
  std::vector<std::string_view> values;
};

// Runs argv (argv[0] is the command name, any case) and appends the reply.
void execute(store& db, session& s, const std::vector<std::string_view>& argv, reply_buffer& out);

}  // namespace resp
