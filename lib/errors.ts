/**
 * Every error this package raises. Codes start with `FST_AUTHZ_`, each is
 * documented in README.md (a test keeps the two in step). The per-request
 * 4xx errors skip stack capture: they are expected outcomes on a hot path,
 * not bugs, and a stack costs microseconds.
 */
import createError from '@fastify/error'

/** An option of `app.register(authzCache, options)` or `new AuthzCache(options)` is invalid. */
export const FST_AUTHZ_OPTIONS = createError('FST_AUTHZ_OPTIONS', 'Invalid option %s: %s', 500, TypeError)

/** A route's `config.authz` (or an `app.authz.require()` check) is invalid; raised at boot. */
export const FST_AUTHZ_ROUTE_CONFIG = createError('FST_AUTHZ_ROUTE_CONFIG', 'Invalid authz check on %s: %s', 500, TypeError)

/**
 * A route carries `config.authz` but no instance of the plugin is registered
 * in its context or a parent, so nothing can run its checks. Raised at boot
 * when the route is seen; otherwise every request to it fails with 500
 * (it never runs unprotected).
 */
export const FST_AUTHZ_ROUTE_UNPROTECTED = createError('FST_AUTHZ_ROUTE_UNPROTECTED', 'Route %s has config.authz, but no fastify-authz-cache is registered in its context or a parent: refusing to run it unprotected', 500)

/** No token, or a malformed, expired or otherwise invalid one. */
export const FST_AUTHZ_UNAUTHENTICATED = createError('FST_AUTHZ_UNAUTHENTICATED', 'Unauthorized: %s', 401, Error, false)

/** The caller is authenticated but the decision does not satisfy the check. */
export const FST_AUTHZ_FORBIDDEN = createError('FST_AUTHZ_FORBIDDEN', 'Forbidden: %s', 403, Error, false)

/** A resource id is missing or is not a non-empty string of at most `maxIdLength` characters. */
export const FST_AUTHZ_BAD_ID = createError('FST_AUTHZ_BAD_ID', 'Bad id for %s: %s', 400, Error, false)

/** The resolver threw, rejected or returned something that is not a Decision. Never cached. */
export const FST_AUTHZ_RESOLVER_FAILED = createError('FST_AUTHZ_RESOLVER_FAILED', 'Authorization resolver for %s failed', 503)

/** The resolver did not answer within `loaderTimeoutMs`. Never cached. */
export const FST_AUTHZ_RESOLVER_TIMEOUT = createError('FST_AUTHZ_RESOLVER_TIMEOUT', 'Authorization resolver for %s timed out after %d ms', 503)

/** A check named a kind that has no resolver (at run time, from `request.authz` or the engine). */
export const FST_AUTHZ_UNKNOWN_KIND = createError('FST_AUTHZ_UNKNOWN_KIND', 'Unknown authorization kind %s', 500, TypeError)

/** The body of `POST {prefix}/invalidate` is malformed; the message names the field. */
export const FST_AUTHZ_BAD_INVALIDATION = createError('FST_AUTHZ_BAD_INVALIDATION', 'Invalid invalidation request: %s', 400)

/**
 * An invalidation was applied on this instance but Redis did not take it
 * (L2 removal or the bus publish failed): other instances may still hold the
 * entries. Raised by the `async` invalidation methods and the admin route.
 */
export const FST_AUTHZ_BUS_FAILED = createError('FST_AUTHZ_BUS_FAILED', 'Invalidation applied on this instance, but Redis did not take it: other instances may still hold the entries', 503)

/** Every error code, for documentation checks. */
export const errorCodes = [
  'FST_AUTHZ_OPTIONS',
  'FST_AUTHZ_ROUTE_CONFIG',
  'FST_AUTHZ_ROUTE_UNPROTECTED',
  'FST_AUTHZ_UNAUTHENTICATED',
  'FST_AUTHZ_FORBIDDEN',
  'FST_AUTHZ_BAD_ID',
  'FST_AUTHZ_RESOLVER_FAILED',
  'FST_AUTHZ_RESOLVER_TIMEOUT',
  'FST_AUTHZ_UNKNOWN_KIND',
  'FST_AUTHZ_BAD_INVALIDATION',
  'FST_AUTHZ_BUS_FAILED'
] as const
