import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import authzCache from '../../dist/lib/index.js'

// Opt-in: once the access levels are declared, a misspelled one does not compile.
declare module '../../dist/lib/index.js' {
  interface AuthzAccessLevels {
    read: true
    write: true
  }
}

const app = Fastify()
await app.register(fastifyJwt, { secret: 'x' })
await app.register(authzCache, { resolvers: { generation: async () => null } })
app.get('/g/:id', { config: { authz: { generation: 'id', access: 'read' } } }, async () => 'ok')
// @ts-expect-error: 'raed' is not an access level
app.get('/h/:id', { config: { authz: { generation: 'id', access: 'raed' } } }, async () => 'ok')
app.get('/r/:id', async (request) => {
  await request.authz.can('generation', 'g1', { access: 'write' })
  // @ts-expect-error: 'raed' is not an access level
  await request.authz.can('generation', 'g1', { access: 'raed' })
  // @ts-expect-error: 'raed' is not an access level
  await request.authz.filter('generation', ['g1'], { access: 'raed' })
  return 'ok'
})
