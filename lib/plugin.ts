/**
 * The Fastify plugin: wires options, the engine, hooks, decorators and
 * routes. No logic of its own lives here.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify'
import { adminRoutes } from './admin.js'
import { Identity } from './checks.js'
import { FST_AUTHZ_OPTIONS } from './errors.js'
import { loggingObserver } from './engine/engine.js'
import { AuthzManager } from './manager.js'
import { resolvePluginOptions, type PluginOptionsBase } from './options.js'
import { registerMetrics, type RegisteredMetrics } from './metrics.js'
import { listenPostgres, type PostgresFeed } from './postgres.js'
import { connectRedis } from './redis.js'
import { RequestAuthz } from './request-authz.js'
import { coverRoutes, guardApplication } from './route-guard.js'

const kRequestAuthz = Symbol('fastify-authz-cache.request')

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
  const identity = new Identity(o.authenticate, o.getUserId, o.maxIdLength)
  const manager = new AuthzManager(o.cache, identity, o.roles)
  manager.observer = loggingObserver(log)
  const redis = o.redis === undefined ? undefined : await connectRedis(manager, o.redis, log)
  let postgres: PostgresFeed | undefined
  try {
    postgres = o.postgres === undefined ? undefined : await listenPostgres(manager, o.postgres, log)
  } catch (error) {
    // The boot fails: what was opened before must not outlive it.
    manager.close()
    await redis?.close()
    throw error
  }

  let metrics: RegisteredMetrics | undefined
  try {
    if (o.metrics !== undefined) metrics = await registerMetrics(manager, o.metrics.registry)
  } catch (error) {
    await postgres?.close()
    manager.close()
    await redis?.close()
    throw error
  }

  fastify.decorate('authz', manager)
  fastify.decorateRequest(kRequestAuthz as unknown as string, null)
  fastify.decorateRequest('authz', {
    getter (this: FastifyRequest) {
      const slot = this as unknown as { [kRequestAuthz]: RequestAuthz | null }
      return slot[kRequestAuthz] ?? (slot[kRequestAuthz] = new RequestAuthz(this, manager, identity, o.roles))
    }
  })

  coverRoutes(fastify, manager)
  guardApplication(fastify, log)

  if (o.admin !== false) {
    const admin = o.admin
    await fastify.register(adminRoutes, {
      prefix: admin.prefix,
      engine: manager,
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
    metrics?.close()
    await postgres?.close()
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
