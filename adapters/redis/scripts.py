"""The broker's Lua scripts, as source constants (no package data to ship).

Every queue script takes the queue's keys in one fixed order (``QUEUE_KEYS``), all
sharing the queue's hash tag, so each script touches one cluster slot. The
per-batch lease keys (``<leases>:<bid>``) share that tag too; their names are
derived inside the scripts, which Redis Cluster allows within the declared slot.

Stored entries are ``rid(20) prio(1) deliveries(8 hex) payload``: the rid is
unique per pushed task (two identical payloads stay two tasks), the priority digit
says which ready list the entry returns to, and the delivery count travels with the
entry so counting costs no extra command.

A leased batch is one member ``<bid>:<owner>`` of the ``leases`` sorted set (score:
its deadline) plus one key ``<leases>:<bid>`` of its unsettled entries (a list in
hand-out order, or a hash rid -> entry, see below), each holding the count it had
*before* this delivery: a release puts it back unchanged (a release is not a
delivery), a lapse or an owner's death puts it back with the count bumped.

A batch of ``SORT_FROM`` tasks or more is moved by ``SORT <ready> BY nosort LIMIT
0 N STORE <lease list>`` then ``LTRIM``: the server copies the entries from list
to list itself, so the payloads never pass through Lua, where each would be
copied into a Lua string and out again. Against popping them into Lua and writing
a hash, that halves the server time of a 1,000-task reserve or better (``python
-m benchmark.redis_costs``). A caller on a plain connection then reads the batch
with ``LRANGE`` in the same MULTI (flag ``l``); other callers get it from the
script. A smaller batch is popped through Lua and pushed to its list. Acking a
whole batch drops its list. The first time part of a batch is settled (a rarer
path: retries, failures, dead letters), the list becomes a hash rid -> entry, so
that each further task settled costs one field delete, not a pass over the list.

Acks arrive as groups ``member, rids`` (one group per batch, the batch's 20-character
rids joined into one argument, or ``*`` for every task of the batch). Times
(``now``, deadlines, etas) are the client's wall clock, passed in ARGV.
"""

from __future__ import annotations

# Key suffixes in the order every queue script receives them as KEYS[1..6].
QUEUE_KEYS = ("ready:0", "ready:1", "delayed", "leases", "notify", "dead")

# Scripts that make tasks ready leave a wake-up token on the queue's notify list,
# where blocked workers wait. Over several independent nodes workers wait on the
# queue's home node only: run elsewhere, a script takes its ``quiet`` variant,
# which leaves no token (the broker wakes the home node instead), so no token
# lies where nobody takes it.
_WAKE = "local WAKE = true\n"


def quiet(source: str) -> str:
    """``source`` leaving no wake-up token (for a node not the queue's home)."""
    if _WAKE not in source:
        raise ValueError("the script leaves no wake-up token to drop")
    return source.replace(_WAKE, "local WAKE = false\n", 1)


# A batch's list (or hash) of unsettled entries, from its member '<bid>:<owner>'.
_BATCH_KEY = """
local function batch_key(member)
  return KEYS[4] .. ':' .. string.sub(member, 1, string.find(member, ':', 1, true) - 1)
end
"""

# Shared helpers, prepended to the queue scripts. Redis' Lua stack takes at most
# ~8000 unpacked values, hence the chunking.
_HELPERS = (
    _WAKE
    + _BATCH_KEY
    + """
local CHUNK = 1000
-- How long a call's token is remembered, so its retries do not act again.
local ONCE_MS = 600000
local function chunked(cmd, key, items, width)
  local step = CHUNK * width
  for i = 1, #items, step do
    redis.call(cmd, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end
local function notify()
  if not WAKE then return end
  redis.call('LPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], 0, 0)
end
local function bump(e)
  local n = tonumber(string.sub(e, 22, 29), 16) + 1
  return string.sub(e, 1, 21) .. string.format('%08x', n) .. string.sub(e, 30)
end
-- Put entries back at the head of their ready lists, in the order given.
local function to_front(entries)
  local back = {{}, {}}
  for i = #entries, 1, -1 do
    local e = entries[i]
    local p = back[string.byte(e, 21) - 47]
    p[#p + 1] = e
  end
  if #back[1] > 0 then chunked('LPUSH', KEYS[1], back[1], 1) end
  if #back[2] > 0 then chunked('LPUSH', KEYS[2], back[2], 1) end
end
-- A batch is a list in hand-out order until part of it is settled; it then
-- becomes a hash rid -> entry, once, so that settling more of it costs a field
-- delete per task, not a pass over the whole list.
local function is_list(key)
  return redis.call('TYPE', key).ok == 'list'
end
local function as_hash(key)
  if not is_list(key) then return end
  local held = redis.call('LRANGE', key, 0, -1)
  local h = {}
  for i = 1, #held do
    h[2 * i - 1] = string.sub(held[i], 1, 20)
    h[2 * i] = held[i]
  end
  redis.call('DEL', key)
  chunked('HSET', key, h, 2)
end
-- The unsettled entries of a batch in hand-out order (rids grow with it), and
-- how many there are.
local function held_entries(key)
  if is_list(key) then return redis.call('LRANGE', key, 0, -1) end
  local held = redis.call('HVALS', key)
  table.sort(held)
  return held
end
local function held_count(key)
  if is_list(key) then return redis.call('LLEN', key) end
  return redis.call('HLEN', key)
end
-- Take a whole batch back (lapsed, or its owner died): counts bumped, to the front.
local function reclaim(members)
  local back = {}
  for _, member in ipairs(members) do
    local key = batch_key(member)
    local held = held_entries(key)
    for i = 1, #held do back[#back + 1] = bump(held[i]) end
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[4], member)
  end
  -- A hash keeps no order, batches lapse in any order; rids grow with push order
  -- (per producer), and an entry starts with its rid, so sorting restores it.
  table.sort(back)
  to_front(back)
  return #back
end
-- Walk groups ``member, rids joined`` in ARGV from position i: fn(member, key,
-- rids) per group. Joined 20-character rids make one argument instead of
-- thousands, which saves the client more than the split costs here.
local function each_group(i, fn)
  for g = i, #ARGV - 1, 2 do
    local joined, rids = ARGV[g + 1], {}
    for j = 1, #joined, 20 do rids[#rids + 1] = string.sub(joined, j, j + 19) end
    fn(ARGV[g], batch_key(ARGV[g]), rids)
  end
end
-- Forget settled rids of a batch; how many it held. The batch's lease goes with
-- its last task.
local function settle(member, key, rids)
  as_hash(key)
  local gone = 0
  for i = 1, #rids, CHUNK do
    local last = math.min(i + CHUNK - 1, #rids)
    gone = gone + redis.call('HDEL', key, unpack(rids, i, last))
  end
  if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[4], member) end
  return gone
end
-- An ack: the rids, or '*' when it covers every task the batch handed out (the
-- batch never holds others), so the whole batch and its lease go at once.
local function acked(member, key, rids)
  if rids[1] == '*' then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[4], member)
  else
    settle(member, key, rids)
  end
end
-- For a caller that found nothing ready: when something will be (a delayed eta or
-- a lease deadline), so it can block exactly that long; '' for never.
local function next_due()
  local d = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local l = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local nxt = d[2]
  if l[2] and (not nxt or tonumber(l[2]) < tonumber(nxt)) then nxt = l[2] end
  return nxt or ''
end
"""
)

# Over ``maxmemory`` (with ``noeviction``) Redis refuses a command that may add
# data when it is a script's first write, and lets a script that has written go
# on (stopping it halfway would break its atomicity). A reserve and the
# maintenance move tasks (ready to leased, delayed to ready, lapsed back to ready)
# and free memory through their acks: they must run then, or workers could not
# drain the queue that fills the memory. So must lease renewal (EXTEND: a lease
# lapsing under a running task hands it to a second worker) and a wake-up token
# (NOTIFY: at most one short list element; without it a woken reserve would wait
# for room while it holds tasks). A DEL of a key that never exists (a hyphen is
# no batch id) is a write that changes nothing and comes first.
_MAY_GO_ON = """
redis.call('DEL', KEYS[4] .. ':-')
"""

# Reclaim lapsed leases first (they were handed out before anything still ready),
# then promote due delayed entries to the tail of their ready lists, in eta order.
# Expects the local ``now``.
_MAINTAIN = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
if #lapsed > 0 then reclaim(lapsed) end
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  local ready = {{}, {}}
  for i = 1, #due do
    local p = ready[string.byte(due[i], 21) - 47]
    p[#p + 1] = due[i]
  end
  if #ready[1] > 0 then chunked('RPUSH', KEYS[1], ready[1], 1) end
  if #ready[2] > 0 then chunked('RPUSH', KEYS[2], ready[2], 1) end
  chunked('ZREM', KEYS[3], due, 1)
end
"""

PUSH = (
    _WAKE
    + """
-- ARGV: priority (0 or 1), eta or '', entries... Returns 1 when a wake-up is
-- due (the ready list was empty, or the tasks were delayed: a worker waits until
-- the earliest eta it knew of), else 0. Only then is a token left (see
-- ``Node.push_ready``).
local n = #ARGV
local due = 1
if ARGV[2] == '' then
  local key = KEYS[tonumber(ARGV[1]) + 1]
  local length = 0
  for i = 3, n, 1000 do
    length = redis.call('RPUSH', key, unpack(ARGV, i, math.min(i + 999, n)))
  end
  if length > n - 2 then due = 0 end
else
  local z = {}
  for i = 3, n do
    z[#z + 1] = ARGV[2]
    z[#z + 1] = ARGV[i]
  end
  for i = 1, #z, 2000 do
    redis.call('ZADD', KEYS[3], unpack(z, i, math.min(i + 1999, #z)))
  end
end
if WAKE and due == 1 then
  redis.call('LPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], 0, 0)
end
return due
"""
)

NOTIFY = (
    _MAY_GO_ON
    + """
redis.call('LPUSH', KEYS[5], '1')
redis.call('LTRIM', KEYS[5], 0, 0)
return 1
"""
)

# The at-most-once fast path sends this, now and then, before a plain LMPOP of
# the ready lists in the same write (see ``Node.pop``): payloads never pass
# through Lua. ARGV: now, count, levels ('1': HIGH only, '2': HIGH then NORMAL),
# chain (when more than ``count`` are ready, 'c': pass a wake-up on; 'm': say so,
# for the caller to pass it on, see the reserve script's flags; '-': neither).
# Returns '' when tasks are ready ('+' for 'm' and more than ``count``), else the
# next due time ('' for none).
MAINTAIN = (
    _HELPERS
    + _MAY_GO_ON
    + """
local now, count = ARGV[1], tonumber(ARGV[2])
"""
    + _MAINTAIN
    + """
local ready = redis.call('LLEN', KEYS[1])
if ARGV[3] == '2' then ready = ready + redis.call('LLEN', KEYS[2]) end
if ready == 0 then return next_due() end
if ready > count then
  if ARGV[4] == 'c' and redis.call('EXISTS', KEYS[5]) == 0 then
    notify()
  elseif ARGV[4] == 'm' then
    return '+'
  end
end
return ''
"""
)

# Positions (1-based) of entries delivered before: only their counts need parsing.
_REDELIVERED = """
local function redelivered(got)
  local again = {}
  for i = 1, #got do
    if string.sub(got[i], 22, 29) ~= '00000000' then again[#again + 1] = i end
  end
  return again
end
"""

# Take up to ``count`` entries off the head of the ready lists, HIGH first
# (ARGV[5]: levels, '1' HIGH only, '2' HIGH then NORMAL).
_POP_FEW = """
local function pop_few(count)
  if ARGV[5] ~= '2' then return redis.call('LPOP', KEYS[1], count) or {} end
  -- LMPOP takes from the first non-empty list: top up from NORMAL only when
  -- HIGH ran short.
  local popped = redis.call('LMPOP', 2, KEYS[1], KEYS[2], 'LEFT', 'COUNT', count)
  local got = popped and popped[2] or {}
  if #got < count and popped and popped[1] == KEYS[1] then
    local more = redis.call('LPOP', KEYS[2], count - #got)
    if more then
      for i = 1, #more do got[#got + 1] = more[i] end
    end
  end
  return got
end
"""

# From this many tasks on, a leased reserve moves them with SORT ... STORE rather
# than through Lua, and a caller on a plain connection reads them with LRANGE
# (``Node._reserve_commands``). ``python -m benchmark.redis_costs`` prints both
# ways at 1, 30, 100 and 1,000 tasks: about even at 30, SORT ... STORE about half
# the server time at 1,000; at 1 task, the pop through Lua costs less.
SORT_FROM = 32

RESERVE = (
    _HELPERS
    + _MAY_GO_ON
    + _REDELIVERED
    + _POP_FEW
    + f"local SORT_FROM = {SORT_FROM}\n"
    + """
-- ARGV: now, count, lease deadline ('' = at-most-once pop), batch member
-- '<bid>:<owner>', levels (1: HIGH only, 2: HIGH then NORMAL), flags, ack
-- groups... Flags: 'r' this call retries one whose reply may have been lost;
-- 'c' pass a wake-up on when the batch leaves more ready (the caller was woken);
-- 'm' the same over several nodes, where workers wait on the queue's home node:
-- only say whether the batch left more ready here, the caller passes it on;
-- 'l' the caller reads the leased batch itself (LRANGE after this script, in the
-- same MULTI), so the reply carries no entries.
-- Returns {entries, next due ('' unless nothing was ready; with entries, '+'
-- for 'm' and more ready), positions (1-based) of the entries delivered before}.
local now, count, deadline, member = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local flags = ARGV[6]
each_group(7, acked)
local key = deadline ~= '' and batch_key(member)
local function handed(more)
  if string.find(flags, 'l', 1, true) then return {{}, more or '', {}} end
  local got = held_entries(key)
  return {got, more or '', redelivered(got)}
end
if key and string.find(flags, 'r', 1, true) and redis.call('EXISTS', key) == 1 then
  -- The batch id is new for every reserve call, so a batch already stored under
  -- it means this call's first attempt ran and its reply was lost: hand out the
  -- same tasks again rather than leasing more (which would strand the first ones).
  redis.call('ZADD', KEYS[4], deadline, member)
  return handed()
end
"""
    + _MAINTAIN
    + """
-- Move up to n entries from the head of a ready list to the batch's list; how many.
local function lease_from(ready, n)
  local moved = redis.call('SORT', ready, 'BY', 'nosort', 'LIMIT', 0, n, 'STORE', key)
  if moved > 0 then redis.call('LTRIM', ready, moved, -1) end
  return moved
end
local n, got = 0, nil
if key and count >= SORT_FROM then
  n = lease_from(KEYS[1], count)
  if n < count and ARGV[5] == '2' then
    if n == 0 then
      n = lease_from(KEYS[2], count)
    else
      -- HIGH ran short: top up from NORMAL (STORE would overwrite, so via Lua).
      local more = redis.call('LPOP', KEYS[2], count - n)
      if more then
        chunked('RPUSH', key, more, 1)
        n = n + #more
      end
    end
  end
else
  -- A pop, or a lease of a few: through Lua costs less than the SORTs then.
  got = pop_few(count)
  n = #got
  if key and n > 0 then chunked('RPUSH', key, got, 1) end
end
if n == 0 then
  return {{}, next_due(), {}}
end
if key then redis.call('ZADD', KEYS[4], deadline, member) end
-- More may be ready: a woken caller passes the wake-up on to the next blocked
-- worker (unless a token already waits, as it does while every worker is busy).
local more = ''
if n == count and string.find(flags, 'c', 1, true)
    and redis.call('EXISTS', KEYS[5]) == 0
    and redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  notify()
elseif n == count and string.find(flags, 'm', 1, true)
    and redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
  more = '+'
end
if got and not string.find(flags, 'l', 1, true) then
  return {got, more, redelivered(got)}
end
return handed(more)
"""
)

# The common reserve, lean: a lease of fewer than ``SORT_FROM`` tasks, for a
# caller that was not woken (no wake-up to pass on), whose acks are all of whole
# batches, and that ran the reserve script less than ``MAINTAIN_EVERY`` ago
# (``Node.reserve``). A retry (flag 'r') looks for its first attempt's batch as
# the reserve script does. It reclaims lapsed leases and promotes due delayed
# tasks only when nothing is ready or a delayed task is due (the head of the
# delayed set says so): a lapsed lease waits that much longer. The helpers
# that maintenance needs are defined in that branch only: a worker taking one
# task at a time sends this for almost every task, and it costs the server about
# a seventh less than the reserve script (``python -m benchmark.redis_costs``,
# rows "lease 1 + ack"; docs/redis.md quotes them). ARGV and reply as the
# reserve script's.
RESERVE_FEW = (
    _BATCH_KEY
    + _REDELIVERED
    + _POP_FEW
    + """
local now, count, deadline, member = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
-- An ack's DEL is a write that frees memory, so it lets the script go on over
-- maxmemory as the reserve script's first DEL does (which is then not needed).
if #ARGV < 7 then
"""
    + _MAY_GO_ON
    + """
end
for g = 7, #ARGV - 1, 2 do
  redis.call('DEL', batch_key(ARGV[g]))
  redis.call('ZREM', KEYS[4], ARGV[g])
end
local key = batch_key(member)
if string.find(ARGV[6], 'r', 1, true) and redis.call('EXISTS', key) == 1 then
  -- A retry whose first attempt ran (see the reserve script): the same tasks.
  -- Still a list: nobody got their receipts to settle any of them.
  redis.call('ZADD', KEYS[4], deadline, member)
  local held = redis.call('LRANGE', key, 0, -1)
  return {held, '', redelivered(held)}
end
-- A delayed task due by now goes through the upkeep below first, so that a
-- HIGH one comes before the NORMAL tasks already ready. Most queues have no
-- delayed task: an EXISTS costs the server a third of the ZRANGE of the head.
local fallen_due = redis.call('EXISTS', KEYS[3]) == 1
if fallen_due then
  local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  fallen_due = tonumber(head[2]) <= tonumber(now)
end
local got = {}
if not fallen_due then
  if count == 1 then
    -- One task, moved by the server from list to list (HIGH first): the entry
    -- is not copied into a Lua table and out again.
    local e = redis.call('LMOVE', KEYS[1], key, 'LEFT', 'RIGHT')
    if not e and ARGV[5] == '2' then
      e = redis.call('LMOVE', KEYS[2], key, 'LEFT', 'RIGHT')
    end
    if e then
      redis.call('ZADD', KEYS[4], deadline, member)
      if string.sub(e, 22, 29) ~= '00000000' then return {{e}, '', {1}} end
      return {{e}, '', {}}
    end
  else
    got = pop_few(count)
  end
end
if #got == 0 then
"""
    + _HELPERS
    + _MAINTAIN
    + """
  got = pop_few(count)
  if #got == 0 then return {{}, next_due(), {}} end
end
redis.call('RPUSH', key, unpack(got))
redis.call('ZADD', KEYS[4], deadline, member)
return {got, '', redelivered(got)}
"""
)

ACK = (
    _HELPERS
    + """
each_group(1, acked)
return 1
"""
)

RELEASE = (
    _HELPERS
    + """
-- ARGV: eta ('' = ready now), groups...
local back = {}
each_group(2, function(member, key, rids)
  as_hash(key)
  for i = 1, #rids, CHUNK do
    local last = math.min(i + CHUNK - 1, #rids)
    local part = redis.call('HMGET', key, unpack(rids, i, last))
    for j = 1, #part do
      if part[j] then back[#back + 1] = part[j] end
    end
  end
  settle(member, key, rids)
end)
if #back == 0 then return 0 end
if ARGV[1] == '' then
  to_front(back)
else
  local z = {}
  for i = 1, #back do
    z[#z + 1] = ARGV[1]
    z[#z + 1] = back[i]
  end
  chunked('ZADD', KEYS[3], z, 2)
end
notify()
return #back
"""
)

RELEASE_OWNER = (
    _HELPERS
    + """
-- ARGV: owner. Scans the batch list (one member per reservation held).
local mine = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if string.sub(member, string.find(member, ':', 1, true) + 1) == ARGV[1] then
    mine[#mine + 1] = member
  end
end
local n = reclaim(mine)
if n > 0 then notify() end
return n
"""
)

EXTEND = (
    _MAY_GO_ON
    + """
-- ARGV: deadline, batch members... Only leases still held are renewed.
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[4], 'XX', ARGV[1], ARGV[i])
end
return 1
"""
)

DEAD_LETTER = (
    _HELPERS
    + """
-- ARGV: record, then the task's group, or for a task popped without lease a
-- token fresh per call. A leased task is recorded only while still held, so a
-- retried call (or a holder whose lease lapsed) adds no second record; a popped
-- one once per token (a retry repeats its call's token).
local held = #ARGV == 2
  and redis.call('SET', KEYS[6] .. ':once:' .. ARGV[2], '1', 'NX', 'PX', ONCE_MS)
each_group(2, function(member, key, rids)
  held = settle(member, key, rids) == 1
end)
if held then redis.call('RPUSH', KEYS[6], ARGV[1]) end
return held and 1 or 0
"""
)

LENGTHS = (
    _HELPERS
    + """
-- ARGV: now. Lapsed leases and due delayed entries count as ready: the next
-- reserve makes them so.
local now = tonumber(ARGV[1])
local due = redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[1])
local ready = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + due
local held = 0
local batches = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
for i = 1, #batches, 2 do
  local member = batches[i]
  local bid = string.sub(member, 1, string.find(member, ':', 1, true) - 1)
  local n = held_count(KEYS[4] .. ':' .. bid)
  if tonumber(batches[i + 1]) <= now then ready = ready + n else held = held + n end
end
return {ready, redis.call('ZCARD', KEYS[3]) - due, held, redis.call('LLEN', KEYS[6])}
"""
)

PURGE = (
    _HELPERS
    + """
local n = redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])
  + redis.call('ZCARD', KEYS[3])
for _, member in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  local bid = string.sub(member, 1, string.find(member, ':', 1, true) - 1)
  local key = KEYS[4] .. ':' .. bid
  n = n + held_count(key)
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return n
"""
)

REPLAY_DEAD = (
    _HELPERS
    + """
-- ARGV: how many (oldest first; -1: all), rid prefix (10 hex, fresh per call).
-- Records are '<dead_at>\\n<len(reason)>\\n<reason><payload>'; replayed tasks
-- start over as fresh NORMAL entries with new rids and no deliveries. A retried
-- call (same prefix) finds its first attempt's count and replays nothing more.
local once = KEYS[6] .. ':once:' .. ARGV[2]
local done = redis.call('GET', once)
if done then return tonumber(done) end
local n = tonumber(ARGV[1])
if n < 0 then n = redis.call('LLEN', KEYS[6]) end
if n == 0 then return 0 end
local recs = redis.call('LPOP', KEYS[6], n) or {}
local entries = {}
for i = 1, #recs do
  local r = recs[i]
  local a = string.find(r, '\\n', 1, true)
  local b = string.find(r, '\\n', a + 1, true)
  local payload = string.sub(r, b + 1 + tonumber(string.sub(r, a + 1, b - 1)))
  entries[i] = ARGV[2] .. string.format('%010x', i) .. '100000000' .. payload
end
if #entries > 0 then
  chunked('RPUSH', KEYS[2], entries, 1)
  notify()
end
redis.call('SET', once, #entries, 'PX', ONCE_MS)
return #entries
"""
)

PURGE_DEAD = """
local n = redis.call('LLEN', KEYS[6])
redis.call('DEL', KEYS[6])
return n
"""
