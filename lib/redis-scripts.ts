/**
 * The Lua scripts of the Redis layer (lib/redis.ts). Each runs atomically,
 * so a read, a write or an invalidation never sees another half done.
 *
 * Layout under `keyPrefix` (one hash tag in the prefix keeps every key in
 * one Redis Cluster slot, as the scripts need):
 *   boot          a random id set when the data set is new: a fence read
 *                 before Redis lost its data never admits a write after
 *   seq           a counter every invalidation increments
 *   g             the `seq` of the last invalidation by pattern or `all`
 *   k:{cacheKey}  the `seq` of the last invalidation of that key
 *   e:{tag}       the `seq` of the last invalidation of the tag
 *   m             the longest value TTL ever written, in ms: marks live longer
 *   v:{cacheKey}  `[startSeq, [tags...]]` JSON, a newline, then the value
 *   t:{tag}       the cache keys carrying the tag (deleted eagerly; the
 *                 marks, not the sets, are what keeps a revoked value out)
 *
 * Validate on read: a value carries the `seq` its load started at and all
 * its tags; READ refuses (and deletes) it when `g`, its key's mark or any of
 * its tags' marks moved past that number. So no value loaded before an
 * invalidation is ever served, however the invalidation's deletes and the
 * read interleave, and whatever SCAN missed. Marks live at least as long as
 * the longest value, so a value never outlives the mark that revokes it.
 */
import { createHash } from 'node:crypto'

/**
 * KEYS: boot, seq, g, v:{key}, k:{key}. ARGV: epoch key prefix, '1' for a
 * fence only (`fresh`), a boot id to set if the data set is new.
 * Answers [fence, 1, value] for a valid value, else [fence].
 */
export const READ_SCRIPT = `
redis.call('SET', KEYS[1], ARGV[3], 'NX')
local fence = redis.call('GET', KEYS[1]) .. '|' .. (redis.call('GET', KEYS[2]) or '0')
if ARGV[2] == '1' then return {fence} end
local raw = redis.call('GET', KEYS[4])
if not raw then return {fence} end
local nl = string.find(raw, '\\n', 1, true)
if not nl then redis.call('DEL', KEYS[4]) return {fence} end
local ok, meta = pcall(cjson.decode, string.sub(raw, 1, nl - 1))
if not ok or type(meta) ~= 'table' or type(meta[2]) ~= 'table' then redis.call('DEL', KEYS[4]) return {fence} end
local start = tonumber(meta[1]) or -1
local stale = tonumber(redis.call('GET', KEYS[3]) or '0') > start or tonumber(redis.call('GET', KEYS[5]) or '0') > start
if not stale then
  for _, tag in ipairs(meta[2]) do
    if tonumber(redis.call('GET', ARGV[1] .. tag) or '0') > start then stale = true break end
  end
end
if stale then redis.call('DEL', KEYS[4]) return {fence} end
return {fence, 1, string.sub(raw, nl + 1)}
`

/**
 * KEYS: boot, g, v:{key}, k:{key}, m, then (t:{tag}, e:{tag}) pairs.
 * ARGV: boot id of the fence, start seq, payload, ttl ms, cache key.
 * Answers 1 when written, 0 when an invalidation (or a data loss) came
 * after the fence.
 */
export const WRITE_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local start = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') > start then return 0 end
if tonumber(redis.call('GET', KEYS[4]) or '0') > start then return 0 end
for i = 6, #KEYS, 2 do
  if tonumber(redis.call('GET', KEYS[i + 1]) or '0') > start then return 0 end
end
local ttl = tonumber(ARGV[4])
if tonumber(redis.call('GET', KEYS[5]) or '0') < ttl then redis.call('SET', KEYS[5], ttl) end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ttl)
for i = 6, #KEYS, 2 do
  redis.call('SADD', KEYS[i], ARGV[5])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
`

/**
 * KEYS: boot, seq, g, m, then (t:{tag}, e:{tag}) pairs, then (v:{key},
 * k:{key}) pairs. ARGV: number of tag pairs, least mark TTL ms, value key
 * prefix, '1' to move `g` (pattern, all), channel ('' for none), message,
 * a boot id to set if the data set is new.
 * Answers [fence after the invalidation, subscribers that received it].
 */
export const INVALIDATE_SCRIPT = `
redis.call('SET', KEYS[1], ARGV[7], 'NX')
local seq = redis.call('INCR', KEYS[2])
local mark = math.max(tonumber(ARGV[2]), tonumber(redis.call('GET', KEYS[4]) or '0') + 1000)
if ARGV[4] == '1' then redis.call('SET', KEYS[3], seq) end
local tagsEnd = 4 + tonumber(ARGV[1]) * 2
for i = 5, tagsEnd, 2 do
  redis.call('SET', KEYS[i + 1], seq, 'PX', mark)
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do redis.call('DEL', ARGV[3] .. member) end
  redis.call('DEL', KEYS[i])
end
for i = tagsEnd + 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], seq, 'PX', mark)
end
local receivers = 0
if ARGV[5] ~= '' then receivers = redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return {redis.call('GET', KEYS[1]) .. '|' .. seq, receivers}
`

const sha1 = (script: string): string => createHash('sha1').update(script).digest('hex')
export const READ_SHA = sha1(READ_SCRIPT)
export const WRITE_SHA = sha1(WRITE_SCRIPT)
export const INVALIDATE_SHA = sha1(INVALIDATE_SCRIPT)

/** The least time an invalidation mark lives: longer than any load can run (it also outlives the longest value written). */
export function epochTtlMs (loaderTimeoutMs: number): number {
  return Math.max(60_000, loaderTimeoutMs * 2)
}
