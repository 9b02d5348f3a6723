/**
 * `app.authz`: the engine plus what only makes sense inside Fastify
 * (`require`, a preHandler factory).
 */
import type { preHandlerHookHandler } from 'fastify'
import { AuthzCache } from './cache.js'
import { CheckRunner, compileChecks, routeParams, type CheckHook, type Identity } from './checks.js'
import type { AuthzCheck } from './check-types.js'
import type { CacheOptions } from './options.js'

export class AuthzManager extends AuthzCache {
  readonly #runner: CheckRunner
  readonly #roles: string[]

  /** The engine with `options`, and the checks' runner for requests whose user `identity` establishes. */
  constructor (options: CacheOptions, identity: Identity, roles: string[]) {
    super(options)
    this.#roles = roles
    this.#runner = new CheckRunner(this, identity, roles)
  }

  /**
   * The `onRequest` hook running a route's `config.authz`, validated against
   * the route's path params. Throws FST_AUTHZ_ROUTE_CONFIG naming the route.
   */
  routeHook (where: string, config: unknown, url: string): CheckHook {
    return this.#runner.hook(compileChecks(where, config, this, this.#roles, routeParams(url)))
  }

  /**
   * A `preHandler` running the checks, for ids that come from the body (or
   * anything else parsed after `onRequest`). Validated now: a bad check
   * throws FST_AUTHZ_ROUTE_CONFIG at boot.
   */
  require (checks: AuthzCheck | AuthzCheck[]): preHandlerHookHandler {
    return this.#runner.hook(compileChecks('app.authz.require()', checks, this, this.#roles, undefined)) as unknown as preHandlerHookHandler
  }
}
