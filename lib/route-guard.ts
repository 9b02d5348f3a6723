/**
 * Route checks, wherever the route was registered (SPEC section 4).
 *
 * The plugin's `onRoute` hook compiles `config.authz` at boot for every route
 * registered after the plugin in its context or below, appends the check to
 * the route's own `onRequest` hooks and marks the route's config as covered.
 * Fastify runs `onRoute` hooks only for routes registered after them, so that
 * alone leaves three shapes unprotected: a route declared before the plugin
 * (including `app.register(plugin)` without `await` followed by `app.get`), a
 * route module registered before it, and a route in a context the plugin is
 * not registered in.
 *
 * One application-wide guard closes them. It is an `onRequest` hook on the
 * root instance (Fastify hands a root hook to every context, existing ones
 * included), and for a route whose config is not marked covered it runs the
 * route's checks, compiled at its first request by the plugin instance that
 * the route's context can see, or fails with 500 when none can. Its `onRoute`
 * twin on the root sees routes of contexts created after the plugin, so
 * those are validated (or refused) at boot, in `onReady`. For a covered route
 * the guard costs two property reads.
 */
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import type { CheckHook } from './checks.js'
import { FST_AUTHZ_ROUTE_UNPROTECTED } from './errors.js'
import { AuthzManager } from './manager.js'

type Done = (error?: Error) => void
type HookList = Array<(...args: any[]) => unknown>
type RouteConfig = Record<string | symbol, unknown> & { authz?: unknown, url?: string, method?: unknown }

/** On a route config whose checks the plugin attached at boot. */
const kCovered = Symbol('fastify-authz-cache.covered')
/** On the check hook itself, so a route announced twice (GET, then its HEAD twin) is checked once. */
const kRouteCheck = Symbol('fastify-authz-cache.routeCheck')

function wantsChecks (authz: unknown): boolean {
  return authz !== undefined && authz !== false
}

function describeRoute (method: unknown, url: unknown): string {
  return `${Array.isArray(method) ? method.join(',') : String(method)} ${String(url)}`
}

/** The plugin instance a context sees, through its `authz` decorator. */
function ownerOf (instance: FastifyInstance): AuthzManager | undefined {
  const authz = (instance as { authz?: unknown }).authz
  return authz instanceof AuthzManager ? authz : undefined
}

/** Fastify makes each encapsulated context with `Object.create(parent)`: the root is the end of that chain. */
function rootOf (instance: FastifyInstance): FastifyInstance {
  let root = instance
  for (let up = Object.getPrototypeOf(root); up !== null && typeof up.addHook === 'function'; up = Object.getPrototypeOf(up)) root = up
  return root
}

/** The plugin's own `onRoute` hook: compile at boot, attach, mark covered. */
export function coverRoutes (fastify: FastifyInstance, manager: AuthzManager): void {
  fastify.addHook('onRoute', function authzOnRoute (route: RouteOptions) {
    const config = route.config as RouteConfig | undefined
    if (config === undefined || !wantsChecks(config.authz)) return
    const existing: HookList = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? [...route.onRequest] : [route.onRequest]
    if (!existing.some((hook) => (hook as { [kRouteCheck]?: boolean })[kRouteCheck] === true)) {
      const hook = manager.routeHook(describeRoute(route.method, route.url), config.authz, route.url)
      Object.defineProperty(hook, kRouteCheck, { value: true })
      route.onRequest = [...existing, hook] as RouteOptions['onRequest']
    }
    // Fastify copies the config (own symbols included) into the route's context after onRoute.
    route.config = { ...config, [kCovered]: true } as RouteOptions['config']
  })
}

/** A late route's checks, or why it cannot have any (answered as a 500 on every request). */
type LateRoute = CheckHook | Error

class AppGuard {
  readonly #log: FastifyBaseLogger
  /** Route context config -> its checks, compiled at its first request. */
  readonly #late = new WeakMap<object, LateRoute>()
  /** Routes with checks the root's onRoute saw, to resolve in onReady. */
  #seen: Array<{ instance: FastifyInstance, where: string, authz: unknown, url: string }> = []
  #contextSlot: symbol | undefined
  #searched = false

  constructor (log: FastifyBaseLogger) {
    this.#log = log
  }

  install (root: FastifyInstance): void {
    const guard = this
    root.addHook('onRoute', function authzRouteSeen (this: FastifyInstance, route: RouteOptions) {
      const config = route.config as RouteConfig | undefined
      if (config === undefined || !wantsChecks(config.authz) || config[kCovered] === true) return
      guard.#seen.push({ instance: this, where: describeRoute(route.method, route.url), authz: config.authz, url: route.url })
    })
    root.addHook('onReady', async function authzRoutesReady () { guard.#resolveSeen() })
    root.addHook('onRequest', function authzRouteGuard (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply, done: Done) {
      const config = guard.#configOf(request)
      if (config[kCovered] === true || !wantsChecks(config.authz)) {
        done()
        return
      }
      guard.#runLate(this, config, request, reply, done)
    })
  }

  /**
   * The route's config. `request.routeOptions` builds a fresh object on every
   * read; the route context it takes `config` from is an own symbol slot of
   * the request. That slot is found once, by identity against the public
   * getter, and read directly from then on (the public getter stays the
   * fallback if a Fastify release moves it).
   */
  #configOf (request: FastifyRequest): RouteConfig {
    const slot = this.#contextSlot
    if (slot !== undefined) return (request as unknown as Record<symbol, { config: RouteConfig }>)[slot].config
    const config = request.routeOptions.config as RouteConfig
    if (!this.#searched) {
      this.#searched = true
      for (const symbol of Object.getOwnPropertySymbols(request)) {
        const value = (request as unknown as Record<symbol, unknown>)[symbol]
        if (value !== null && typeof value === 'object' && (value as { config?: unknown }).config === config) {
          this.#contextSlot = symbol
          break
        }
      }
    }
    return config
  }

  /** Boot-time answer for routes registered outside the plugin's onRoute: validated, or refused by name. */
  #resolveSeen (): void {
    const seen = this.#seen
    this.#seen = []
    const unowned: string[] = []
    for (const route of seen) {
      const owner = ownerOf(route.instance)
      if (owner === undefined) unowned.push(route.where)
      else owner.routeHook(route.where, route.authz, route.url)
    }
    if (unowned.length > 0) throw new FST_AUTHZ_ROUTE_UNPROTECTED(unowned.join(', '))
  }

  #runLate (instance: FastifyInstance, config: RouteConfig, request: FastifyRequest, reply: FastifyReply, done: Done): void {
    let late = this.#late.get(config)
    if (late === undefined) {
      late = this.#compile(instance, config)
      this.#late.set(config, late)
    }
    if (late instanceof Error) done(late)
    else late(request, reply, done)
  }

  #compile (instance: FastifyInstance, config: RouteConfig): LateRoute {
    const where = describeRoute(config.method, config.url)
    const owner = ownerOf(instance)
    if (owner === undefined) {
      this.#log.error({ route: where }, 'authz: a route with config.authz is outside every fastify-authz-cache context; it answers 500 until the plugin is registered where it can see the route')
      return new FST_AUTHZ_ROUTE_UNPROTECTED(where)
    }
    try {
      const hook = owner.routeHook(where, config.authz, String(config.url))
      this.#log.warn({ route: where }, 'authz: route registered before fastify-authz-cache; its checks were compiled at its first request, not at boot. Register the plugin (with await) before the routes')
      return hook
    } catch (error) {
      this.#log.error({ route: where, err: error }, 'authz: invalid config.authz on a route registered before the plugin; it answers 500')
      return error as Error
    }
  }
}

const guarded = new WeakSet<object>()

/** Installs the application-wide guard once per application (the first plugin instance does it). */
export function guardApplication (fastify: FastifyInstance, log: FastifyBaseLogger): void {
  const root = rootOf(fastify)
  if (guarded.has(root)) return
  guarded.add(root)
  new AppGuard(log).install(root)
}
