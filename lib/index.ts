/**
 * fastify-authz-cache: the package entry. Default export and `authzCache`
 * are the plugin; `AuthzCache` is the engine, usable without Fastify.
 * The Fastify module augmentation lives here, so every consumer of the
 * package's types gets it.
 */
import type { FastifyRequest } from 'fastify'
import { authzCachePlugin } from './plugin.js'
import type { AuthzManager } from './manager.js'
import type { RequestAuthz } from './request-authz.js'
import type { PluginOptionsBase } from './options.js'

export { AuthzCache } from './cache.js'
export type { CacheObserver, CachedOptions, KindHandle, SharedLayer, SharedRead } from './cache.js'
export { AuthzManager } from './manager.js'
export { RequestAuthz } from './request-authz.js'
export { presets } from './options.js'
export type { AdminOptions, CacheOptions, PresetValues, RedisOptions } from './options.js'
export { escapeKeySegment, compilePattern, MAX_PATTERN_LENGTH, MAX_PATTERN_STARS, type KeyPattern, type MatchMeter } from './keys.js'
export { prometheusText } from './admin.js'
export * as errors from './errors.js'
export type {
  CacheLookup,
  CacheStats,
  Decision,
  InvalidationRequest,
  KindStats,
  RedisStats,
  Requirement,
  Resolver,
  ResolverContext,
  WarmEntry
} from './types.js'

/**
 * The kinds the type checker knows for route checks. Add your custom kinds:
 *
 *     declare module 'fastify-authz-cache' {
 *       interface AuthzKinds { document: true }
 *     }
 */
export interface AuthzKinds {
  generation: true
  project: true
  team: true
  profile: true
}

/** Where a check finds its id: a route param name, or a function of the request. */
export type AuthzIdSource = string | ((request: FastifyRequest) => string | undefined)

type OneKind<Id> = {
  [K in keyof AuthzKinds]: { [P in K]: K extends 'profile' ? true | Id : Id } & { [P in Exclude<keyof AuthzKinds, K>]?: never }
}[keyof AuthzKinds]

/** `access` and/or `role`, and `fresh` to skip the cache for this check (reload and store). */
export type AuthzRequirementFields = ({ access: string, role?: string } | { role: string, access?: string }) & { fresh?: boolean }

/** One route check: exactly one kind with its id source, plus `access` and/or `role`. */
export type AuthzCheck = OneKind<AuthzIdSource> & AuthzRequirementFields

/** One `request.authz.check()` argument: one kind with its id, plus the requirement. */
export type AuthzRequestCheck = OneKind<string> & AuthzRequirementFields

/** `config.authz` of a route. */
export type AuthzRouteConfig = AuthzCheck | AuthzCheck[] | false

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
