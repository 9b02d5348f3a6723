import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { expectAssignable, expectError, expectNotAssignable, expectType } from 'tsd'
import authzCache, { AuthzCache, authzCache as named, presets, type AuthzCheck, type CacheStats, type Decision } from '../../dist/lib/index.js'

declare module '../../dist/lib/index.js' {
  interface AuthzKinds {
    document: true
  }
}

const app = Fastify()
await app.register(fastifyJwt, { secret: 'x' })
await app.register(authzCache, {
  preset: 'production',
  maxEntries: 1000,
  resolvers: {
    generation: async ({ userId, id, signal }) => { expectType<AbortSignal>(signal); return { granted: userId === id } },
    document: async () => null,
    project: {
      one: async ({ id }) => ({ granted: id !== '' }),
      many: async ({ userId, ids, signal }) => { expectType<string[]>(ids); expectType<AbortSignal>(signal); return new Map(ids.map((id) => [id, { granted: userId !== id }])) }
    },
    team: { many: async ({ ids }) => Object.fromEntries(ids.map((id) => [id, null])) }
  }
})
expectType<typeof authzCache>(named)

// config.authz: one kind, access or role
app.get('/g/:generationId', { config: { authz: { generation: 'generationId', access: 'read' } } }, async () => 'ok')
app.get('/t/:teamId', { config: { authz: [{ team: 'teamId', role: 'admin' }, { project: (req) => (req.params as { p: string }).p, access: 'write', fresh: true }] } }, async () => 'ok')
app.get('/d/:id', { config: { authz: { document: 'id', access: 'read' } } }, async () => 'ok')
app.get('/me', { config: { authz: { profile: true, access: 'read' } } }, async () => 'ok')
app.get('/public', { config: { authz: false } }, async () => 'ok')

// a misspelled kind or field does not compile
// @ts-expect-error: 'generaton' is not a kind
app.get('/x/:id', { config: { authz: { generaton: 'id', access: 'read' } } }, async () => 'ok')
// @ts-expect-error: 'acess' is not a field
app.get('/y/:id', { config: { authz: { generation: 'id', acess: 'read' } } }, async () => 'ok')
expectNotAssignable<AuthzCheck>({ generation: 'id' })
expectNotAssignable<AuthzCheck>({ generation: 'id', project: 'p', access: 'read' })
expectNotAssignable<AuthzCheck>({ generation: 42, access: 'read' })
expectAssignable<AuthzCheck>({ generation: 'id', access: 'read', role: 'admin' })

// app.authz: the engine plus require and cached
expectType<number>(app.authz.invalidateUserData('u1'))
expectType<Promise<number>>(app.authz.invalidateUserAuthorizationCache('u1'))
expectType<{ value: Decision | undefined, hit: boolean }>(app.authz.getGenerationAccess('g1', 'u1'))
expectType<CacheStats>(app.authz.getStats())
app.post('/p', { preHandler: app.authz.require({ project: (req) => (req.body as { projectId: string }).projectId, access: 'write' }) }, async () => 'ok')
expectError(app.authz.require({ projcet: 'id', access: 'write' }))
const cachedFn = app.authz.cached(async (a: string, b: number) => ({ a, b }), { kind: 'fn', ttlSeconds: 5 })
expectType<Promise<{ a: string, b: number }>>(cachedFn('x', 1))
expectError(cachedFn(1, 'x'))

// request.authz
app.get('/r/:id', async (request) => {
  expectType<string | undefined>(request.authz.userId)
  expectType<Decision>(await request.authz.generationAccess('g1'))
  expectType<boolean>(await request.authz.can('generation', 'g1', { access: 'read' }))
  expectType<Decision>(await request.authz.check({ generation: 'g1', access: 'read' }))
  // @ts-expect-error: a check names a kind
  await request.authz.check({ access: 'read' })
  expectType<Map<string, Decision>>(await request.authz.decisions('generation', ['g1', 'g2']))
  // a misspelled kind does not compile
  // @ts-expect-error: 'generaton' is not a kind
  await request.authz.can('generaton', 'g1', { access: 'read' })
  // @ts-expect-error: 'generaton' is not a kind
  await request.authz.decision('generaton', 'g1')
  // @ts-expect-error: 'generaton' is not a kind
  await request.authz.filter('generaton', ['g1'])
  expectType<boolean>(await request.authz.can('document', 'd1'))
  expectType<string[]>(await request.authz.filter('generation', ['g1', 'g2'], { access: 'read' }))
  return 'ok'
})

// the engine alone
const engine = new AuthzCache({ maxEntries: 10, resolvers: { generation: async () => ({ granted: true }) } })
expectType<Promise<Decision>>(engine.getOrLoad('generation', 'u1', 'g1'))
expectType<Promise<Map<string, Decision>>>(engine.getOrLoadMany('generation', 'u1', ['g1']))
expectType<{ predicted: number, used: number, wasted: number, bytes: number }>(engine.getStats().warming)
// a batch resolver answers a Map or an object, nothing else; a resolver object has one or many
expectError(new AuthzCache({ resolvers: { generation: { many: async () => [{ granted: true }] } } }))
expectError(new AuthzCache({ resolvers: { generation: { once: async () => null } } }))
expectType<number>(presets.development.maxEntries)
expectError(new AuthzCache({ maxEntries: '10' }))
expectError(app.register(authzCache, { preset: 'staging' }))
