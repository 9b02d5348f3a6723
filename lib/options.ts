/**
 * Presets, defaults and validation of every option, in one place. Invalid
 * options fail with FST_AUTHZ_OPTIONS naming the option.
 */
import { FST_AUTHZ_OPTIONS } from './errors.js'
import type { Resolver } from './types.js'

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
/** Share of an entry's TTL after which a hit refreshes it in the background (with `warmingEnabled`). */
export const DEFAULT_REFRESH_AHEAD_RATIO = 0.9

/** The option values a preset sets; explicit options win over them. */
export interface PresetValues {
  maxEntries: number
  maxSizeMb: number
  authTtlSeconds: number
  negativeTtlSeconds: number
  uuidValidationTtlSeconds: number
  ttlJitterPercent: number
  targetAccessTimeMs: number
  targetHitRatePercent: number
  compressionEnabled: boolean
  compressionThresholdBytes: number
  warmingEnabled: boolean
  cleanupIntervalSeconds: number
  loaderTimeoutMs: number
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
    loaderTimeoutMs: 2000
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
    loaderTimeoutMs: 2000
  })
})

/** The options of the cache engine (`new AuthzCache(options)`). */
export interface CacheOptions extends Partial<PresetValues> {
  /** `'development'` (the default) or `'production'`; explicit options win over the preset. */
  preset?: 'development' | 'production'
  /** The existing authorization service, one resolver per kind. A kind is known only when it has one. */
  resolvers?: Record<string, Resolver>
  /** Longest accepted id, in characters; longer ids are rejected with FST_AUTHZ_BAD_ID. Default 256. */
  maxIdLength?: number
  /** Clock in milliseconds, for tests. Default `Date.now`. */
  now?: () => number
  /** Random source in [0, 1) for TTL jitter, for tests. Default `Math.random`. */
  random?: () => number
}

/** Cache options after presets, defaults and validation. */
export interface ResolvedCacheOptions extends PresetValues {
  preset: 'development' | 'production'
  resolvers: Record<string, Resolver>
  maxIdLength: number
  now: () => number
  random: () => number
}

function fail (name: string, why: string): never {
  throw new FST_AUTHZ_OPTIONS(name, why)
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

const CACHE_OPTION_NAMES = new Set<string>([
  'preset', 'resolvers', 'maxIdLength', 'now', 'random', ...Object.keys(presets.development)
])

/** Names of the cache options, so the plugin can tell its own from the engine's. */
export function isCacheOptionName (name: string): boolean {
  return CACHE_OPTION_NAMES.has(name)
}

/**
 * Merges a preset with explicit options and validates every value.
 * Unknown option names are left to the caller (the plugin has more).
 */
export function resolveCacheOptions (options: CacheOptions = {}): ResolvedCacheOptions {
  if (!isPlainObject(options)) fail('options', `must be an object, got ${describe(options)}`)
  const presetName = options.preset ?? 'development'
  if (presetName !== 'development' && presetName !== 'production') {
    fail('preset', `must be 'development' or 'production', got ${describe(presetName)}`)
  }
  const base = presets[presetName]
  const pick = <K extends keyof PresetValues>(key: K): PresetValues[K] =>
    (options[key] === undefined ? base[key] : options[key]) as PresetValues[K]

  const resolvers = options.resolvers ?? {}
  if (!isPlainObject(resolvers)) fail('resolvers', `must be an object of functions, got ${describe(resolvers)}`)
  for (const [kind, resolver] of Object.entries(resolvers)) {
    checkKindName(`resolvers.${kind}`, kind)
    checkFunction(`resolvers.${kind}`, resolver)
  }

  return {
    preset: presetName,
    resolvers: { ...resolvers } as Record<string, Resolver>,
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
    maxIdLength: checkInteger('maxIdLength', options.maxIdLength ?? DEFAULT_MAX_ID_LENGTH, 1, 65_536),
    now: options.now === undefined ? Date.now : checkFunction('now', options.now),
    random: options.random === undefined ? Math.random : checkFunction('random', options.random)
  }
}
