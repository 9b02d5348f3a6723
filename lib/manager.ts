/**
 * `app.authz`: the engine plus what only makes sense inside Fastify
 * (`require`, a preHandler factory).
 */
import type { preHandlerHookHandler } from 'fastify'
import { AuthzCache } from './cache.js'
import { compileChecks, routeParams, type CheckRunner, type CheckHook } from './checks.js'
import type { AuthzCheck } from './index.js'

export class AuthzManager extends AuthzCache {
  #runner: CheckRunner | undefined
  #roles: string[] = []

  /** Wires the request-side pieces; called once by the plugin. */
  bind (runner: CheckRunner, roles: string[]): void {
    this.#runner = runner
    this.#roles = roles
  }

  /**
   * The `onRequest` hook running a route's `config.authz`, validated against
   * the route's path params. Throws FST_AUTHZ_ROUTE_CONFIG naming the route.
   */
  routeHook (where: string, config: unknown, url: string): CheckHook {
    return (this.#runner as CheckRunner).hook(compileChecks(where, config, this, this.#roles, routeParams(url)))
  }

  /**
   * A `preHandler` running the checks, for ids that come from the body (or
   * anything else parsed after `onRequest`). Validated now: a bad check
   * throws FST_AUTHZ_ROUTE_CONFIG at boot.
   */
  require (checks: AuthzCheck | AuthzCheck[]): preHandlerHookHandler {
    const runner = this.#runner as CheckRunner
    return runner.hook(compileChecks('app.authz.require()', checks, this, this.#roles, undefined)) as unknown as preHandlerHookHandler
  }
}
