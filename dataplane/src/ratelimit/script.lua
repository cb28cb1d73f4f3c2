-- weir rate limiter: one atomic step for one key. Mirrors `step` and `expires_at` in
-- dataplane/src/ratelimit/algorithm.rs line by line; change both together.
-- KEYS[1]  the counter key (a hash with fields a, b, c)
-- ARGV     algorithm (1 fixed, 2 sliding, 3 bucket), limit, window_ms, burst,
--          now_ms ("" = use the Redis server's clock, the production setting)
-- Returns  {allowed (0|1), a, b, c, now}
local key = KEYS[1]
local algo = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local w = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local now
local caller_time = ARGV[5] ~= nil and ARGV[5] ~= ''
if caller_time then
  now = tonumber(ARGV[5])
else
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fdiv(x, y) return math.floor(x / y) end
local function cdiv(x, y) return math.ceil(x / y) end

local stored = redis.call('HMGET', key, 'a', 'b', 'c')
local has = stored[1] ~= false and stored[1] ~= nil
local sa, sb, sc = 0, 0, 0
if has then
  sa = tonumber(stored[1]); sb = tonumber(stored[2]) or 0; sc = tonumber(stored[3]) or 0
  if sa > now then now = sa end
end

local a, b, c, allowed, expires
if algo == 1 then
  local start = now - (now % w)
  local count = 0
  if has and sa == start then count = sb end
  allowed = count < limit
  if allowed then count = count + 1 end
  a, b, c = start, count, 0
  expires = a + w
elseif algo == 2 then
  local start = now - (now % w)
  local curr, prev = 0, 0
  if has and sa == start then curr, prev = sb, sc
  elseif has and sa + w == start then curr, prev = 0, sb end
  local estimate = fdiv(prev * (w - (now - start)), w) + curr
  allowed = estimate < limit
  if allowed then curr = curr + 1 end
  a, b, c = start, curr, prev
  expires = a + 2 * w
else
  local cap = (limit + burst) * w
  local level = cap
  if has then level = math.min(cap, sb + (now - sa) * limit) end
  allowed = level >= w
  if allowed then level = level - w end
  a, b, c = now, level, 0
  expires = a + cdiv(cap - math.min(level, cap), limit)
end

local ttl = expires - now
if ttl < 1 then ttl = 1 end
-- A caller's timeline is not the server's, whose clock runs the TTL: keep such keys an hour.
if caller_time and ttl < 3600000 then ttl = 3600000 end
redis.call('HSET', key, 'a', string.format('%d', a), 'b', string.format('%d', b),
  'c', string.format('%d', c))
redis.call('PEXPIRE', key, string.format('%d', ttl))
local ok = 0
if allowed then ok = 1 end
return {ok, a, b, c, now}
