import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache from '../lib/index.js'
import type { AuthzCacheOptions } from '../lib/index.js'
import { tableResolver } from './helpers.js'
import type { Decision } from '../lib/types.js'

export const SECRET = 'test-secret-that-is-long-enough-for-hs256'

export interface TestApp {
  app: FastifyInstance
  db: ReturnType<typeof tableResolver>
  token: (sub: string, claims?: Record<string, unknown>) => string
  auth: (sub: string, claims?: Record<string, unknown>) => { authorization: string }
}

/**
 * A fresh app per test: @fastify/jwt, the plugin with table-backed resolvers
 * that count their calls, and `routes` to add routes before `ready()`.
 */
export async function buildApp (
  t: { teardown: (fn: () => unknown) => void },
  options: Partial<AuthzCacheOptions> = {},
  routes?: (app: FastifyInstance) => void,
  table?: Map<string, Decision | null>
): Promise<TestApp> {
  const db = tableResolver(table)
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: SECRET })
  await app.register(authzCache, {
    cleanupIntervalSeconds: 0,
    resolvers: { generation: db.resolver, project: db.resolver, team: db.resolver, profile: db.resolver, document: db.resolver },
    ...options
  })
  routes?.(app)
  await app.ready()
  const token = (sub: string, claims: Record<string, unknown> = {}): string => app.jwt.sign({ sub, ...claims })
  return { app, db, token, auth: (sub, claims) => ({ authorization: `Bearer ${token(sub, claims)}` }) }
}

declare module '../lib/index.js' {
  interface AuthzKinds {
    /** The custom kind the tests use. */
    document: true
  }
}
