-- The meter's rules 2-6 (module doc) for one batch, held to their plain row-by-row reading
-- by test_redis_meter_equals_row_by_row (tests/scraping/test_meter.py).
-- One call per Redis Cluster slot: KEYS holds, per entity, its state string and its alert
-- list (both tagged {entity}; every entity of a call hashes to the same slot).
-- ARGV[1]: little-endian doubles (exact for integers below 2^53): span, threshold,
-- bucket_us, cap (the most posts a bucket holds), then per entity latest_us, n, and n
-- bucket/posts pairs sorted by bucket.
-- ARGV[2]: the alert levels (consentry.scraping.meter.rule.ALERT_LEVELS), ascending
-- little-endian doubles; the last is 100. Rule 4 (`rule.reaches`): a level below 100 is
-- reached when 100 x count >= threshold x level, 100 when count > threshold.
-- State string: 6 little-endian doubles (top bucket, total, latest_us, armed level, late
-- rows, pair count), then the kept (bucket, posts) pairs sorted by bucket; the last pair
-- is the top bucket.
-- Returns one string: per entity 4 little-endian doubles (lower, upper, latest, counted),
-- then per raised alert the text " entity_index level at_us lower upper confirmed"
-- (entity_index from 0).
local fmt, sub, call = string.format, string.sub, redis.call
local spack, sunpack = struct.pack, struct.unpack
local HEAD = 48
local HEADS = {'<dddddd', '<dddddddd', '<dddddddddd', '<dddddddddddd', '<dddddddddddddd'}
local PAIRS = {'<dd', '<dddd', '<dddddd', '<dddddddd'}
local NONE = {}  -- an empty list that is only read

-- Flat numbers t[1 .. m] as doubles (m even; constant formats for up to 4 pairs, else
-- chunks: the Lua stack is limited).
local function packed(t, m)
  if m <= 8 then return spack(PAIRS[m / 2], unpack(t, 1, m)) end
  local parts = {}
  for i = 1, m, 1000 do
    local j = math.min(m, i + 999)
    parts[#parts + 1] = spack('<' .. string.rep('d', j - i + 1), unpack(t, i, j))
  end
  return table.concat(parts)
end

local args = ARGV[1]
local span, threshold, bucket_us, cap, a = sunpack('<dddd', args)
local LEVELS = {}
for i = 1, #ARGV[2] / 8 do LEVELS[i] = sunpack('<d', ARGV[2], 8 * i - 7) end
local NLEVELS = #LEVELS

-- Rule 4: whether `count` posts reach alert level `lv`.
local function reaches(count, lv)
  if lv == 100 then return count > threshold end
  return count * 100 >= threshold * lv
end

local out, raised, nraised = {}, {}, 0
for e = 1, #KEYS / 2 do
  local key = KEYS[2 * e - 1]
  local latest, nrows, r0 = sunpack('<dd', args, a)
  -- rows at byte r0, 16 bytes each; r1: the last one
  a = r0 + 16 * nrows
  local r1 = a - 16
  -- old/oldv: the pairs read, ascending (the prefix that may leave the window, or all of
  -- them on the slow path); the rest stays as bytes (`mid`) but for the last pair.
  local old, oldv, nold = NONE, NONE, 0
  local top, total, seen, armed, late, n
  local raw = call('GET', key)
  local mid, last_b, last_v = nil, nil, nil
  if not raw then
    top = sunpack('<d', args, r0); total = 0; seen = latest; armed = 0; late = 0; n = 0
  else
    top, total, seen, armed, late, n = sunpack('<dddddd', raw)
    old, oldv = {}, {}
    if latest > seen then seen = latest end
    local last = sunpack('<d', args, r1)
    if last < top then last = top end
    local F = last - span  -- the oldest kept bucket after this batch
    -- Slow path when a row falls strictly between F and the top bucket (rows out of
    -- time order): every pair is read.
    local slow = false
    for j = r0, r1, 16 do
      local k = sunpack('<d', args, j)
      if k > F and k < top then slow = true; break end
    end
    -- Pairs one at a time (a constant format: no new string, no table).
    local pos = HEAD + 1
    while nold < n do
      local b, v, nxt = sunpack('<dd', raw, pos)
      if b > F and not slow then break end
      nold = nold + 1; old[nold] = b; oldv[nold] = v
      pos = nxt
    end
    if nold < n then
      last_b, last_v = sunpack('<dd', raw, HEAD + 16 * (n - 1) + 1)
      mid = sub(raw, HEAD + 16 * nold + 1, HEAD + 16 * (n - 1))
    end
  end
  -- Rows in bucket order: the window moves up with the top bucket, buckets below its
  -- floor leave it (read ones from the front of `old`, added ones from that of `added`).
  local added, addv, nadded = {}, {}, 0
  local io, ia, jo, counted = 1, 1, 1, 0
  for j = r0, r1, 16 do
    local k, p = sunpack('<dd', args, j)
    if k > top then top = k end
    local floor = top - span
    while io <= nold and old[io] < floor do total = total - oldv[io]; io = io + 1 end
    while ia <= nadded and added[ia] < floor do total = total - addv[ia]; ia = ia + 1 end
    if k < floor then
      late = late + 1
    else
      counted = 1
      -- A bucket saturates at `cap`: the row adds what fits.
      while jo <= nold and old[jo] < k do jo = jo + 1 end
      if jo <= nold and old[jo] == k then
        p = math.min(p, cap - oldv[jo]); oldv[jo] = oldv[jo] + p
      elseif k == last_b then
        p = math.min(p, cap - last_v); last_v = last_v + p
      else
        p = math.min(p, cap); nadded = nadded + 1; added[nadded] = k; addv[nadded] = p
      end
      total = total + p
      -- The highest level reached (0: none).
      local level = 0
      for i = NLEVELS, 1, -1 do
        if reaches(total, LEVELS[i]) then level = LEVELS[i]; break end
      end
      if level == 0 then
        armed = 0
      elseif level > armed then
        local at = (k + 1) * bucket_us - 1
        if latest < at then at = latest end
        -- The floor bucket, if kept, is the first kept one read or added.
        local lower = total
        if io <= nold and old[io] == floor then lower = total - oldv[io]
        elseif ia <= nadded and added[ia] == floor then lower = total - addv[ia] end
        for i = 1, NLEVELS do
          local lv = LEVELS[i]
          if armed < lv and lv <= level then
            local confirmed = 0
            if reaches(lower, lv) then confirmed = 1 end
            -- Integers formatted with %d: cjson would print 16-digit instants in %.14g.
            call('RPUSH', KEYS[2 * e], fmt(
              '{"level":%d,"at_us":%d,"lower":%d,"upper":%d,"confirmed":%d}',
              lv, at, lower, total, confirmed))
            nraised = nraised + 1
            raised[nraised] = fmt(' %d %d %d %d %d %d', e - 1, lv, at, lower, total, confirmed)
          end
        end
        armed = level
      end
    end
  end
  local floor = top - span
  local lower = total
  if io <= nold and old[io] == floor then lower = total - oldv[io]
  elseif ia <= nadded and added[ia] == floor then lower = total - addv[ia] end
  -- Kept pairs in bucket order, as flat (bucket, posts) numbers: `low`, the read and added
  -- ones below the untouched middle, merged (read ones are all below it); then the middle
  -- as bytes; then `high`, the last pair and the added ones above it. (The last pair is
  -- above the final floor: never the oldest, so `lower` above needs no look at it.)
  local low, nl = {}, 0
  while io <= nold or (ia <= nadded and (last_b == nil or added[ia] < last_b)) do
    if io <= nold and (ia > nadded or old[io] < added[ia]) then
      low[nl + 1] = old[io]; low[nl + 2] = oldv[io]; io = io + 1
    else
      low[nl + 1] = added[ia]; low[nl + 2] = addv[ia]; ia = ia + 1
    end
    nl = nl + 2
  end
  local high, nh = NONE, 0
  if last_b ~= nil or ia <= nadded then high = {} end
  if last_b ~= nil then high[1] = last_b; high[2] = last_v; nh = 2 end
  for q = ia, nadded do high[nh + 1] = added[q]; high[nh + 2] = addv[q]; nh = nh + 2 end
  local count = (nl + nh) / 2
  if last_b ~= nil then count = count + (n - 1 - nold) end
  -- One pack for the head and the pairs before the middle when they are few (constant
  -- formats: no new format string).
  local value
  if nl <= 8 then
    value = spack(HEADS[nl / 2 + 1], top, total, seen, armed, late, count, unpack(low, 1, nl))
  else
    value = spack('<dddddd', top, total, seen, armed, late, count) .. packed(low, nl)
  end
  if mid ~= nil then value = value .. mid end
  if nh > 0 then value = value .. packed(high, nh) end
  call('SET', key, value)
  out[e] = spack('<dddd', lower, total, seen, counted)
end
return table.concat(out) .. table.concat(raised)
