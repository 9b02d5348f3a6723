/**
 * The Fastify plugin: wires options, the engine, hooks, decorators and
 * routes. No logic of its own lives here.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest, RouteOptions } from 'fastify'
import { adminRoutes } from './admin.js'
import { CheckRunner, Identity, compileChecks, routeParams } from './checks.js'
import { FST_AUTHZ_OPTIONS } from './errors.js'
import { AuthzManager } from './manager.js'
import { resolvePluginOptions, type PluginOptionsBase } from './options.js'
import { connectRedis } from './redis.js'
import { RequestAuthz } from './request-authz.js'

const kRequestAuthz = Symbol('fastify-authz-cache.request')
const kRouteCheck = Symbol('fastify-authz-cache.routeCheck')

type HookList = Array<(...args: any[]) => unknown>

async function authzCache (fastify: FastifyInstance, options: PluginOptionsBase): Promise<void> {
  const o = resolvePluginOptions(options)
  const hasJwt = fastify.hasRequestDecorator('jwtVerify')
  if (o.authenticate === true && !hasJwt) {
    throw new FST_AUTHZ_OPTIONS('authenticate', 'true (the default) needs @fastify/jwt registered before this plugin; pass a function, or false when request.user is set by an earlier hook')
  }
  if (o.admin !== false && o.admin.authorize === undefined && !hasJwt) {
    throw new FST_AUTHZ_OPTIONS('admin', 'the default guard needs @fastify/jwt; pass admin.authorize, or admin: false')
  }

  const log = fastify.log.child({ plugin: 'fastify-authz-cache' })
  const manager = new AuthzManager(o.cache)
  const identity = new Identity(o.authenticate, o.getUserId)
  const runner = new CheckRunner(manager, identity, o.roles)
  manager.bind(runner, o.roles)
  manager.observer = {
    invalidated (request, removed, origin) {
      log.info({ authzInvalidation: request, removed, origin }, 'authz cache invalidated')
    },
    loaderFailed (kind, id, userId, error) {
      log.error({ kind, id, userId, err: error }, 'authz resolver failed; the check is denied with 503 and nothing is cached')
    }
  }
  const redis = o.redis === undefined ? undefined : await connectRedis(manager, o.redis, log)

  fastify.decorate('authz', manager)
  fastify.decorateRequest(kRequestAuthz as unknown as string, null)
  fastify.decorateRequest('authz', {
    getter (this: FastifyRequest) {
      const slot = this as unknown as { [kRequestAuthz]: RequestAuthz | null }
      return slot[kRequestAuthz] ?? (slot[kRequestAuthz] = new RequestAuthz(this, manager, identity, o.roles))
    }
  })

  fastify.addHook('onRoute', function authzOnRoute (route: RouteOptions) {
    const config = (route.config as { authz?: unknown } | undefined)?.authz
    if (config === undefined || config === false) return
    const where = `${String(route.method)} ${route.url}`
    const existing: HookList = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? [...route.onRequest] : [route.onRequest]
    // Fastify re-announces a GET route as HEAD with the same hooks: check once.
    if (existing.some((hook) => (hook as { [kRouteCheck]?: boolean })[kRouteCheck] === true)) return
    const hook = runner.hook(compileChecks(where, config, manager, o.roles, routeParams(route.url)))
    Object.defineProperty(hook, kRouteCheck, { value: true })
    route.onRequest = [...existing, hook] as RouteOptions['onRequest']
  })

  if (o.admin !== false) {
    const admin = o.admin
    await fastify.register(adminRoutes, {
      prefix: admin.prefix,
      engine: manager,
      // The default guard wants a verified JWT, whatever `authenticate` says for the checks.
      identity: hasJwt ? new Identity(true, o.getUserId) : identity,
      authorize: admin.authorize
    })
  }

  fastify.addHook('onReady', async function authzWarm () {
    if (manager.options.warmingEnabled && o.warm !== undefined) {
      const stored = await manager.warm(await o.warm())
      log.info({ stored }, 'authz cache warmed')
    }
  })

  fastify.addHook('onClose', async function authzClose () {
    manager.close()
    await redis?.close()
  })
}

/**
 * The plugin. `@fastify/jwt` is checked for at register time rather than
 * declared in `dependencies`, because `authenticate: false` or a function
 * makes it unnecessary.
 */
export const authzCachePlugin: FastifyPluginAsync<PluginOptionsBase> = fp(authzCache, {
  fastify: '5.x',
  name: 'fastify-authz-cache'
})
