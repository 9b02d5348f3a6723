/**
 * Presets, defaults and validation of every option, in one place. Invalid
 * options fail with FST_AUTHZ_OPTIONS naming the option.
 */
import { FST_AUTHZ_OPTIONS } from './errors.js'
import type { BatchResolver, Resolver, ResolverPair, ResolverSpec } from './types.js'

/** The four built-in kinds; any other resolver name is a custom kind. */
export const BUILT_IN_KINDS = ['generation', 'project', 'team', 'profile'] as const

/** Names that cannot be custom kinds: they are key prefixes of other entries. */
export const RESERVED_KIND_NAMES = ['gen', 'user', 'uuid', 'cached', 'auth'] as const

/** A kind name goes into keys and tags unescaped, so it is kept to a safe alphabet. */
export const KIND_NAME_PATTERN = /^[a-z][a-zA-Z0-9_-]{0,63}$/

export const DEFAULT_ROLES = ['viewer', 'member', 'admin', 'owner']
export const DEFAULT_COMPRESSION_THRESHOLD_BYTES = 1024
export const DEFAULT_MAX_ID_LENGTH = 256
export const DEFAULT_ADMIN_PREFIX = '/_authz'
export const DEFAULT_ADMIN_SCOPE = 'authz:admin'
/** Most ids one batch resolver call (`many`) is asked about by default; larger batches are split. */
export const DEFAULT_MAX_BATCH_SIZE = 100
/** Share of an entry's TTL after which a hit refreshes it in the background (with `warmingEnabled`). */
export const DEFAULT_REFRESH_AHEAD_RATIO = 0.9

/** The option values a preset sets; explicit options win over them. */
export interface PresetValues {
  /**
   * Hard cap on live entries: an insert that would pass it evicts first, so
   * the count never exceeds it, even briefly.
   * @default 10000 (development), 50000 (production)
   */
  maxEntries: number
  /**
   * Cap on the accounted bytes of the entries, in MiB (value after
   * compression, key, and a fixed per-entry overhead). An entry larger than
   * the whole cap is not stored.
   * @default 64 (development), 256 (production)
   */
  maxSizeMb: number
  /** TTL of grants and profiles, in seconds (shortened by jitter, never lengthened). @default 600 */
  authTtlSeconds: number
  /** TTL of denials, in seconds: a stale deny is only an outage, a stale grant a breach. @default 30 */
  negativeTtlSeconds: number
  /** TTL of `setUuidValidation` entries, in seconds. @default 3600 */
  uuidValidationTtlSeconds: number
  /** Every TTL is shortened at random by up to this share, against synchronized expiry (0 to 50). @default 10 */
  ttlJitterPercent: number
  /** Target of the mean sampled hit time, in ms, reported in `performanceTargets`. @default 5 (development), 3 (production) */
  targetAccessTimeMs: number
  /** Target hit rate, in percent, reported in `performanceTargets`. @default 95 (development), 97 (production) */
  targetHitRatePercent: number
  /** Deflate stored values larger than `compressionThresholdBytes` (in L1 and L2). @default false (development), true (production) */
  compressionEnabled: boolean
  /** Serialized size above which a value is compressed, in bytes. @default 1024 */
  compressionThresholdBytes: number
  /**
   * Run the `warm` option at startup, and refresh a hot entry in the
   * background once 90% of its TTL has passed.
   * @default false (development), true (production)
   */
  warmingEnabled: boolean
  /**
   * Interval of the background sweep of expired entries, in seconds; `0`
   * turns it off (entries still expire on read). One sweep at a time, in
   * steps of at most a few milliseconds.
   * @default 60 (development), 30 (production)
   */
  cleanupIntervalSeconds: number
  /** A resolver slower than this fails the check with 503 FST_AUTHZ_RESOLVER_TIMEOUT, in ms. @default 2000 */
  loaderTimeoutMs: number
  /**
   * Which entry goes when the cache is full. `'tinylfu'`: W-TinyLFU, a small
   * window and a main region that admits an entry only when it is asked for
   * more often than the one it would replace (scans and one-shot ids never
   * flush hot grants; denials must be clearly hotter than a grant). Its
   * frequency sketch takes about 12 bytes per entry of `maxEntries`, counted
   * in `maxSizeMb`. `'clock'`: CLOCK (second chance), recency alone.
   * @default 'tinylfu'
   */
  evictionPolicy: 'tinylfu' | 'clock'
  /**
   * Most ids one call of a batch resolver (`many`) is asked about: a batch
   * check of more misses is split into calls of at most this many ids
   * (OpenFGA's BatchCheck takes 50 by default). @default 100
   */
  maxBatchSize: number
}

export const presets: Readonly<Record<'development' | 'production', Readonly<PresetValues>>> = Object.freeze({
  development: Object.freeze({
    maxEntries: 10_000,
    maxSizeMb: 64,
    authTtlSeconds: 600,
    negativeTtlSeconds: 30,
    uuidValidationTtlSeconds: 3600,
    ttlJitterPercent: 10,
    targetAccessTimeMs: 5,
    targetHitRatePercent: 95,
    compressionEnabled: false,
    compressionThresholdBytes: DEFAULT_COMPRESSION_THRESHOLD_BYTES,
    warmingEnabled: false,
    cleanupIntervalSeconds: 60,
    loaderTimeoutMs: 2000,
    evictionPolicy: 'tinylfu',
    maxBatchSize: DEFAULT_MAX_BATCH_SIZE
  }),
  production: Object.freeze({
    maxEntries: 50_000,
    maxSizeMb: 256,
    authTtlSeconds: 600,
    negativeTtlSeconds: 30,
    uuidValidationTtlSeconds: 3600,
    ttlJitterPercent: 10,
    targetAccessTimeMs: 3,
    targetHitRatePercent: 97,
    compressionEnabled: true,
    compressionThresholdBytes: DEFAULT_COMPRESSION_THRESHOLD_BYTES,
    warmingEnabled: true,
    cleanupIntervalSeconds: 30,
    loaderTimeoutMs: 2000,
    evictionPolicy: 'tinylfu',
    maxBatchSize: DEFAULT_MAX_BATCH_SIZE
  })
})

/** The options of the cache engine (`new AuthzCache(options)`). */
export interface CacheOptions extends Partial<PresetValues> {
  /** `'development'` (the default) or `'production'`; explicit options win over the preset. */
  preset?: 'development' | 'production'
  /**
   * The existing authorization service, one resolver per kind: a function
   * (one id per call) or `{ one?, many? }` (`many` answers many ids of one
   * user in one call). A kind is known only when it has one.
   */
  resolvers?: Record<string, ResolverSpec>
  /** Longest accepted id, in characters; longer ids are rejected with FST_AUTHZ_BAD_ID. Default 256. */
  maxIdLength?: number
  /** Clock in milliseconds, for tests. Default `Date.now`. */
  now?: () => number
  /** Random source in [0, 1) for TTL jitter, for tests. Default `Math.random`. */
  random?: () => number
  /**
   * The engine used without Fastify (`new AuthzCache`): a pino logger (or
   * any logger with `info` and `error`) for what the plugin logs through
   * Fastify's: invalidations at info, resolver failures at error. Default:
   * silent. The plugin ignores it and uses Fastify's logger.
   */
  logger?: EngineLogger
}

/** What the engine logs through: pino's `info(obj, msg)` and `error(obj, msg)`. */
export interface EngineLogger {
  info (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

/** Cache options after presets, defaults and validation. */
export interface ResolvedCacheOptions extends PresetValues {
  preset: 'development' | 'production'
  /** One resolver per kind, in the pair form (at least one of the two set). */
  resolvers: Record<string, ResolverPair>
  maxIdLength: number
  now: () => number
  random: () => number
  logger: EngineLogger | undefined
}

function fail (name: string, why: string): never {
  throw new FST_AUTHZ_OPTIONS(name, why)
}

function checkEvictionPolicy (value: unknown): 'tinylfu' | 'clock' {
  if (value !== 'tinylfu' && value !== 'clock') fail('evictionPolicy', `must be 'tinylfu' or 'clock', got ${describe(value)}`)
  return value
}

function checkInteger (name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(name, `must be an integer from ${min} to ${max}, got ${describe(value)}`)
  }
  return value
}

function checkNumber (name: string, value: unknown, min: number, max: number, exclusiveMin = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (exclusiveMin && value === min)) {
    fail(name, `must be a number ${exclusiveMin ? 'above' : 'from'} ${min}${max === Number.MAX_VALUE ? '' : ` to ${max}`}, got ${describe(value)}`)
  }
  return value
}

function checkBoolean (name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') fail(name, `must be a boolean, got ${describe(value)}`)
  return value
}

function checkLogger (logger: unknown): EngineLogger | undefined {
  if (logger === undefined) return undefined
  const l = logger as Partial<EngineLogger> | null
  if (l === null || typeof l !== 'object' || typeof l.info !== 'function' || typeof l.error !== 'function') {
    fail('logger', `must be a pino logger (with info and error), got ${describe(logger)}`)
  }
  return logger as EngineLogger
}

/** A resolver as the engine keeps it: `{ one?, many? }` with at least one, each a function. */
function checkResolver (name: string, value: unknown): ResolverPair {
  if (typeof value === 'function') return { one: value as Resolver }
  if (!isPlainObject(value)) fail(name, `must be a function or { one, many }, got ${describe(value)}`)
  for (const key of Object.keys(value)) {
    if (key !== 'one' && key !== 'many') fail(`${name}.${key}`, 'is not known (a resolver object has `one` and `many`)')
  }
  const one = value.one === undefined ? undefined : checkFunction<Resolver>(`${name}.one`, value.one)
  const many = value.many === undefined ? undefined : checkFunction<BatchResolver>(`${name}.many`, value.many)
  if (one === undefined && many === undefined) fail(name, 'needs `one`, `many`, or both')
  return { one, many }
}

export function checkFunction<T> (name: string, value: unknown): T {
  if (typeof value !== 'function') fail(name, `must be a function, got ${describe(value)}`)
  return value as T
}

export function describe (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'string') return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + '...' : value)}`
  if (typeof value === 'object') return 'an object'
  return `${typeof value} ${String(value)}`
}

export function isPlainObject (value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/** Checks a kind name for a resolver or a check; returns it. */
export function checkKindName (name: string, kind: string): string {
  if (!KIND_NAME_PATTERN.test(kind)) {
    fail(name, `kind ${JSON.stringify(kind)} must match ${KIND_NAME_PATTERN} (it is used in cache keys)`)
  }
  if ((RESERVED_KIND_NAMES as readonly string[]).includes(kind)) {
    fail(name, `kind ${JSON.stringify(kind)} is reserved (${RESERVED_KIND_NAMES.join(', ')})`)
  }
  return kind
}

/** Every key of `CacheOptions`: `resolveCacheOptions` rejects any other name. */
const CACHE_OPTION_NAMES: ReadonlySet<string> = new Set<string>([
  'preset', 'resolvers', 'maxIdLength', 'now', 'random', 'logger', ...Object.keys(presets.development)
])

/** Names of the cache options, so the plugin can tell its own from the engine's. */
export function isCacheOptionName (name: string): boolean {
  return CACHE_OPTION_NAMES.has(name)
}

/**
 * Merges a preset with explicit options and validates every value. An
 * unknown name fails (FST_AUTHZ_OPTIONS naming it), so a typo is never
 * silently a default; the plugin hands over only the names this knows.
 */
export function resolveCacheOptions (options: CacheOptions = {}): ResolvedCacheOptions {
  if (!isPlainObject(options)) fail('options', `must be an object, got ${describe(options)}`)
  for (const name of Object.keys(options)) {
    if (!CACHE_OPTION_NAMES.has(name)) fail(name, 'is not a known option')
  }
  const presetName = options.preset ?? 'development'
  if (presetName !== 'development' && presetName !== 'production') {
    fail('preset', `must be 'development' or 'production', got ${describe(presetName)}`)
  }
  const base = presets[presetName]
  const pick = <K extends keyof PresetValues>(key: K): PresetValues[K] =>
    (options[key] === undefined ? base[key] : options[key]) as PresetValues[K]

  const given = options.resolvers ?? {}
  if (!isPlainObject(given)) fail('resolvers', `must be an object of functions or { one, many } objects, got ${describe(given)}`)
  const resolvers: Record<string, ResolverPair> = {}
  for (const [kind, resolver] of Object.entries(given)) {
    checkKindName(`resolvers.${kind}`, kind)
    resolvers[kind] = checkResolver(`resolvers.${kind}`, resolver)
  }

  return {
    preset: presetName,
    resolvers,
    maxEntries: checkInteger('maxEntries', pick('maxEntries'), 1),
    maxSizeMb: checkNumber('maxSizeMb', pick('maxSizeMb'), 0, Number.MAX_VALUE, true),
    authTtlSeconds: checkNumber('authTtlSeconds', pick('authTtlSeconds'), 0, Number.MAX_VALUE, true),
    negativeTtlSeconds: checkNumber('negativeTtlSeconds', pick('negativeTtlSeconds'), 0, Number.MAX_VALUE, true),
    uuidValidationTtlSeconds: checkNumber('uuidValidationTtlSeconds', pick('uuidValidationTtlSeconds'), 0, Number.MAX_VALUE, true),
    ttlJitterPercent: checkNumber('ttlJitterPercent', pick('ttlJitterPercent'), 0, 50),
    targetAccessTimeMs: checkNumber('targetAccessTimeMs', pick('targetAccessTimeMs'), 0, Number.MAX_VALUE, true),
    targetHitRatePercent: checkNumber('targetHitRatePercent', pick('targetHitRatePercent'), 0, 100),
    compressionEnabled: checkBoolean('compressionEnabled', pick('compressionEnabled')),
    compressionThresholdBytes: checkInteger('compressionThresholdBytes', pick('compressionThresholdBytes'), 0),
    warmingEnabled: checkBoolean('warmingEnabled', pick('warmingEnabled')),
    cleanupIntervalSeconds: checkNumber('cleanupIntervalSeconds', pick('cleanupIntervalSeconds'), 0, 86_400),
    loaderTimeoutMs: checkInteger('loaderTimeoutMs', pick('loaderTimeoutMs'), 1, 600_000),
    evictionPolicy: checkEvictionPolicy(pick('evictionPolicy')),
    maxBatchSize: checkInteger('maxBatchSize', pick('maxBatchSize'), 1, 10_000),
    maxIdLength: checkInteger('maxIdLength', options.maxIdLength ?? DEFAULT_MAX_ID_LENGTH, 1, 65_536),
    now: options.now === undefined ? Date.now : checkFunction('now', options.now),
    random: options.random === undefined ? Math.random : checkFunction('random', options.random),
    logger: checkLogger(options.logger)
  }
}

// ------------------------------------------------------------ plugin options

/** Guard of the admin routes. */
export interface AdminOptions {
  /** Route prefix. Default `/_authz`. */
  prefix?: string
  /**
   * Decides who may use the admin routes; may be async. Answer `true` to let
   * the request through, `false` for 403; throw a 401 error for "who are you".
   * Default: a verified JWT whose `scope` claim (string or array) holds `authz:admin`.
   */
  authorize?: (request: any) => boolean | Promise<boolean>
}

/** Redis as L2 and invalidation bus (SPEC section 8). */
export interface RedisOptions {
  /** An ioredis client you own (left open on close), e.g. `app.redis` from @fastify/redis. */
  client?: unknown
  /** A URL to connect to; the plugin owns and closes that client. */
  url?: string
  /** Share decisions through Redis (read before a resolver call). Default true. */
  l2?: boolean
  /** Publish every invalidation to all instances. Default true. */
  bus?: boolean
  /** Prefix of every Redis key. Default `authz:`. */
  keyPrefix?: string
  /** Pub/sub channel of the bus. Default `authz:invalidate`. */
  channel?: string
  /** While the bus is down, L1 entries older than this are not served. Default 5. */
  busOutageMaxStalenessSeconds?: number
  /** Timeout of one Redis command, in ms. Default 250. */
  commandTimeoutMs?: number
  /** Every instance publishes a heartbeat this often and must hear its own within twice that (plus `commandTimeoutMs`), or the bus is down. Default 1000. */
  heartbeatMs?: number
  /** The async invalidations wait this long for every instance's acknowledgement (and for Redis to take them). Default 250. */
  ackTimeoutMs?: number
}

/** Invalidations from the database: PostgreSQL LISTEN/NOTIFY (SPEC section 9). */
export interface PostgresOptions {
  /** A connection string; the plugin opens one `pg` connection, LISTENs on it, re-opens it with backoff when lost, and closes it on close. Needs the `pg` package. */
  connectionString?: string
  /** A connected `pg.Client` (not a Pool) or a PGlite instance you own: used as is and left open on close (a lost `pg.Client` is not re-opened). */
  client?: unknown
  /** The channel the triggers notify. Default `authz_invalidate`. */
  channel?: string
  /** A liveness query runs on the LISTEN connection this often and must answer within twice that, or the connection counts as lost. Default 1000. */
  heartbeatMs?: number
  /** Timeout of connecting and of LISTEN, in ms. Default 5000. */
  connectTimeoutMs?: number
}

export const DEFAULT_POSTGRES_CHANNEL = 'authz_invalidate'
export const DEFAULT_POSTGRES_CONNECT_TIMEOUT_MS = 5000

export interface ResolvedPostgresOptions {
  connectionString: string | undefined
  client: unknown
  channel: string
  heartbeatMs: number
  connectTimeoutMs: number
}

/** The braces are a Redis Cluster hash tag: every key of the plugin lands in one slot, as its scripts need. */
export const DEFAULT_REDIS_KEY_PREFIX = '{authz}:'
export const DEFAULT_HEARTBEAT_MS = 1000
export const DEFAULT_ACK_TIMEOUT_MS = 250
export const DEFAULT_REDIS_CHANNEL = 'authz:invalidate'
export const DEFAULT_BUS_OUTAGE_MAX_STALENESS_SECONDS = 5
export const DEFAULT_REDIS_COMMAND_TIMEOUT_MS = 250

export interface ResolvedRedisOptions {
  client: unknown
  url: string | undefined
  l2: boolean
  bus: boolean
  keyPrefix: string
  channel: string
  busOutageMaxStalenessSeconds: number
  commandTimeoutMs: number
  heartbeatMs: number
  ackTimeoutMs: number
}

export interface PluginOptionsBase extends CacheOptions {
  /** Role ranking, lowest first. Default `['viewer', 'member', 'admin', 'owner']`. */
  roles?: string[]
  /** The user id of a request. Default: the `sub` claim of the verified JWT (`request.user.sub`). */
  getUserId?: (request: any) => string | undefined
  /**
   * How a request gets its identity when `request.user` is unset: `true`
   * (default) calls `request.jwtVerify()` from @fastify/jwt; a function is
   * awaited instead; `false` trusts whatever set `request.user` earlier.
   */
  authenticate?: boolean | ((request: any) => unknown)
  /** Entries preloaded at startup when `warmingEnabled`. */
  warm?: () => Promise<Array<{ kind: string, userId: string, id?: string, decision: any }>>
  /** Admin routes: on by default at `/_authz` behind the guard; `false` registers none. */
  admin?: false | AdminOptions
  /** Redis L2 and invalidation bus; absent: L1 only. */
  redis?: RedisOptions
  /** Invalidations from the database (LISTEN/NOTIFY); absent: none. */
  postgres?: PostgresOptions
  /**
   * `{ registry }`: a prom-client `Registry` (or prom-client's default
   * `register`) to register the cache's metrics on, with histograms of
   * resolver calls and invalidation propagation. Needs `prom-client`.
   */
  metrics?: { registry: unknown }
}

export interface ResolvedPluginOptions {
  cache: CacheOptions
  /** The engine's resolved `maxIdLength`: user ids are bounded like resource ids. */
  maxIdLength: number
  roles: string[]
  getUserId: ((request: any) => unknown) | undefined
  authenticate: boolean | ((request: any) => unknown)
  warm: PluginOptionsBase['warm']
  admin: false | { prefix: string, authorize: AdminOptions['authorize'] }
  redis: ResolvedRedisOptions | undefined
  postgres: ResolvedPostgresOptions | undefined
  metrics: { registry: unknown } | undefined
}

const PLUGIN_OPTION_NAMES = new Set(['roles', 'getUserId', 'authenticate', 'warm', 'admin', 'redis', 'postgres', 'metrics'])

const POSTGRES_OPTION_NAMES = new Set(['connectionString', 'client', 'channel', 'heartbeatMs', 'connectTimeoutMs'])

/** A `pg` client: a connection of its own, not a Pool (LISTEN needs one dedicated connection). */
export function isPgClient (client: unknown): client is { query: Function, connect: Function, on: Function } {
  const c = client as { query?: unknown, connect?: unknown, on?: unknown, totalCount?: unknown } | null
  return typeof c?.query === 'function' && typeof c.connect === 'function' && typeof c.on === 'function' && c.totalCount === undefined
}

function resolvePostgresOptions (postgres: unknown): ResolvedPostgresOptions | undefined {
  if (postgres === undefined) return undefined
  if (!isPlainObject(postgres)) fail('postgres', `must be an object, got ${describe(postgres)}`)
  for (const name of Object.keys(postgres)) {
    if (!POSTGRES_OPTION_NAMES.has(name)) fail(`postgres.${name}`, 'is not a known option')
  }
  const { connectionString, client, channel } = postgres as PostgresOptions
  if ((connectionString === undefined) === (client === undefined)) fail('postgres', 'needs a connectionString or a client (one of them)')
  if (client !== undefined && !isPgClient(client) && typeof (client as { listen?: unknown } | null)?.listen !== 'function') {
    fail('postgres.client', 'must be a pg.Client (a Pool cannot LISTEN: it hands out a different connection each time) or a PGlite instance')
  }
  const resolvedChannel = channel === undefined ? DEFAULT_POSTGRES_CHANNEL : checkString('postgres.channel', channel)
  if (Buffer.byteLength(resolvedChannel) > 63) fail('postgres.channel', 'must be at most 63 bytes (a PostgreSQL identifier)')
  // PGlite's listen() does not undo a doubled quote: such a channel would never be heard there.
  if (resolvedChannel.includes('"') || resolvedChannel.includes('\0')) fail('postgres.channel', 'must not contain a double quote or a NUL character')
  const p = postgres as PostgresOptions
  return {
    connectionString: connectionString === undefined ? undefined : checkString('postgres.connectionString', connectionString),
    client,
    channel: resolvedChannel,
    heartbeatMs: p.heartbeatMs === undefined ? DEFAULT_HEARTBEAT_MS : checkInteger('postgres.heartbeatMs', p.heartbeatMs, 10, 60_000),
    connectTimeoutMs: p.connectTimeoutMs === undefined ? DEFAULT_POSTGRES_CONNECT_TIMEOUT_MS : checkInteger('postgres.connectTimeoutMs', p.connectTimeoutMs, 1, 600_000)
  }
}

function checkString (name: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) fail(name, `must be a non-empty string, got ${describe(value)}`)
  return value
}

function resolveRedisOptions (redis: unknown): ResolvedRedisOptions | undefined {
  if (redis === undefined) return undefined
  if (!isPlainObject(redis)) fail('redis', `must be an object, got ${describe(redis)}`)
  for (const name of Object.keys(redis)) {
    if (!['client', 'url', 'l2', 'bus', 'keyPrefix', 'channel', 'busOutageMaxStalenessSeconds', 'commandTimeoutMs', 'heartbeatMs', 'ackTimeoutMs'].includes(name)) {
      fail(`redis.${name}`, 'is not a known option')
    }
  }
  if (redis.client === undefined && redis.url === undefined) fail('redis', 'needs a client or a url')
  if (redis.client !== undefined && (redis.client === null || typeof (redis.client as { duplicate?: unknown }).duplicate !== 'function')) {
    fail('redis.client', 'must be an ioredis client')
  }
  return {
    client: redis.client,
    url: redis.url === undefined ? undefined : checkString('redis.url', redis.url),
    l2: redis.l2 === undefined ? true : checkBoolean('redis.l2', redis.l2),
    bus: redis.bus === undefined ? true : checkBoolean('redis.bus', redis.bus),
    keyPrefix: redis.keyPrefix === undefined ? DEFAULT_REDIS_KEY_PREFIX : checkString('redis.keyPrefix', redis.keyPrefix),
    channel: redis.channel === undefined ? DEFAULT_REDIS_CHANNEL : checkString('redis.channel', redis.channel),
    busOutageMaxStalenessSeconds: redis.busOutageMaxStalenessSeconds === undefined
      ? DEFAULT_BUS_OUTAGE_MAX_STALENESS_SECONDS
      : checkNumber('redis.busOutageMaxStalenessSeconds', redis.busOutageMaxStalenessSeconds, 0, 3600),
    commandTimeoutMs: redis.commandTimeoutMs === undefined
      ? DEFAULT_REDIS_COMMAND_TIMEOUT_MS
      : checkInteger('redis.commandTimeoutMs', redis.commandTimeoutMs, 1, 60_000),
    heartbeatMs: redis.heartbeatMs === undefined ? DEFAULT_HEARTBEAT_MS : checkInteger('redis.heartbeatMs', redis.heartbeatMs, 10, 60_000),
    ackTimeoutMs: redis.ackTimeoutMs === undefined ? DEFAULT_ACK_TIMEOUT_MS : checkInteger('redis.ackTimeoutMs', redis.ackTimeoutMs, 1, 60_000)
  }
}

/**
 * Splits and validates the plugin's options: the engine's are checked by
 * `resolveCacheOptions` (called here too, so a bad one fails `register`),
 * the Fastify layer's here. Unknown names fail, so a typo is not silently
 * a default.
 */
export function resolvePluginOptions (options: PluginOptionsBase): ResolvedPluginOptions {
  if (!isPlainObject(options)) fail('options', `must be an object, got ${describe(options)}`)
  const cache: CacheOptions = {}
  for (const [name, value] of Object.entries(options)) {
    if (isCacheOptionName(name)) (cache as Record<string, unknown>)[name] = value
    else if (!PLUGIN_OPTION_NAMES.has(name)) fail(name, 'is not a known option')
  }
  const { maxIdLength } = resolveCacheOptions(cache)

  const roles = options.roles ?? DEFAULT_ROLES
  if (!Array.isArray(roles) || roles.length === 0 || roles.some((r) => typeof r !== 'string' || r.length === 0) || new Set(roles).size !== roles.length) {
    fail('roles', 'must be a non-empty array of distinct non-empty strings, lowest rank first')
  }
  const authenticate = options.authenticate ?? true
  if (typeof authenticate !== 'boolean' && typeof authenticate !== 'function') {
    fail('authenticate', `must be true, false or a function, got ${describe(authenticate)}`)
  }
  let admin: ResolvedPluginOptions['admin'] = { prefix: DEFAULT_ADMIN_PREFIX, authorize: undefined }
  if (options.admin === false) {
    admin = false
  } else if (options.admin !== undefined) {
    if (!isPlainObject(options.admin)) fail('admin', `must be false or an object, got ${describe(options.admin)}`)
    for (const name of Object.keys(options.admin)) {
      if (name !== 'prefix' && name !== 'authorize') fail(`admin.${name}`, 'is not a known option')
    }
    const prefix = options.admin.prefix === undefined ? DEFAULT_ADMIN_PREFIX : checkString('admin.prefix', options.admin.prefix)
    if (!prefix.startsWith('/')) fail('admin.prefix', `must start with '/', got ${describe(prefix)}`)
    admin = {
      prefix: prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix,
      authorize: options.admin.authorize === undefined ? undefined : checkFunction('admin.authorize', options.admin.authorize)
    }
  }
  return {
    cache,
    maxIdLength,
    roles: [...roles],
    getUserId: options.getUserId === undefined ? undefined : checkFunction('getUserId', options.getUserId),
    authenticate: authenticate as ResolvedPluginOptions['authenticate'],
    warm: options.warm === undefined ? undefined : checkFunction('warm', options.warm),
    admin,
    redis: resolveRedisOptions(options.redis),
    postgres: resolvePostgresOptions(options.postgres),
    metrics: resolveMetricsOptions(options.metrics)
  }
}

function resolveMetricsOptions (metrics: unknown): { registry: unknown } | undefined {
  if (metrics === undefined) return undefined
  if (!isPlainObject(metrics)) fail('metrics', `must be an object { registry }, got ${describe(metrics)}`)
  for (const name of Object.keys(metrics)) if (name !== 'registry') fail(`metrics.${name}`, 'is not a known option')
  if (metrics.registry === undefined) fail('metrics.registry', 'is required: a prom-client Registry')
  return { registry: metrics.registry }
}
