/**
 * fastify-authz-cache: the package entry. Default export and `authzCache`
 * are the plugin; `AuthzCache` is the engine, usable without Fastify.
 * The Fastify module augmentation lives here, so every consumer of the
 * package's types gets it.
 */
import { authzCachePlugin } from './plugin.js'
import type { AuthzManager } from './manager.js'
import type { RequestAuthz } from './request-authz.js'
import type { PluginOptionsBase } from './options.js'
import type { AuthzRouteConfig } from './check-types.js'

export { AuthzCache } from './cache.js'
export type { CacheObserver, CachedOptions, KindHandle, SharedLayer, SharedRead } from './cache.js'
export { AuthzManager } from './manager.js'
export { RequestAuthz } from './request-authz.js'
export { presets } from './options.js'
export type { AdminOptions, CacheOptions, PostgresOptions, PresetValues, RedisOptions } from './options.js'
export { TRIGGER_FUNCTION_SQL, triggerSql, quoteIdent, quoteLiteral, type TriggerMapping, type TriggerSqlOptions } from './postgres-sql.js'
export { escapeKeySegment, compilePattern, MAX_PATTERN_LENGTH, MAX_PATTERN_STARS, type KeyPattern, type MatchMeter } from './keys.js'
export { metricFamilies, prometheusText, registerMetrics, type MetricFamily, type RegisteredMetrics } from './metrics.js'
export { LOAD_CHANNEL, INVALIDATE_CHANNEL, BUS_CHANNEL, type LoadMessage, type InvalidateMessage, type BusMessage } from './telemetry.js'
export * as errors from './errors.js'
export type { AuthzAccess, AuthzAccessLevels, AuthzCheck, AuthzIdSource, AuthzKind, AuthzKinds, AuthzRequestCheck, AuthzRequirementFields, AuthzRouteConfig } from './check-types.js'
export type {
  BatchAnswer,
  BatchResolver,
  BatchResolverContext,
  CacheLookup,
  CacheStats,
  Decision,
  EvictionStats,
  InvalidationRequest,
  KindStats,
  PostgresStats,
  RedisStats,
  Requirement,
  Resolver,
  ResolverContext,
  ResolverPair,
  ResolverSpec,
  WarmEntry,
  WarmingStats
} from './types.js'

/** Options of `app.register(authzCache, options)`. */
export type AuthzCacheOptions = PluginOptionsBase

declare module 'fastify' {
  interface FastifyRequest {
    /** Cached authorization checks for this request's user. */
    authz: RequestAuthz
  }
  interface FastifyInstance {
    /** The authorization cache: engine methods, `require`, `cached`, `warm`. */
    authz: AuthzManager
  }
  interface FastifyContextConfig {
    /** Checks run in an `onRequest` hook of this route; `false` opts out. */
    authz?: AuthzRouteConfig
  }
}

export const authzCache = authzCachePlugin
export default authzCachePlugin
