/**
 * `npm start`: the example service on PGlite (or PostgreSQL with
 * DATABASE_URL), printing sample tokens and curl commands to try.
 *
 * Environment: PORT (3000), HOST (127.0.0.1), DATABASE_URL, REDIS_URL,
 * JWT_SECRET, LOG_LEVEL (info).
 */
import { buildExampleApp, DEV_JWT_SECRET } from './app.js'

const port = Number(process.env.PORT ?? 3000)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`PORT must be an integer from 0 to 65535, got ${JSON.stringify(process.env.PORT)}`)
  process.exit(1)
}
const host = process.env.HOST ?? '127.0.0.1'
const jwtSecret = process.env.JWT_SECRET === undefined || process.env.JWT_SECRET === '' ? undefined : process.env.JWT_SECRET

const { app, db, tokens, ids } = await buildExampleApp({
  databaseUrl: process.env.DATABASE_URL,
  // An existing schema is used as it is (several instances share it); EXAMPLE_RESEED=1 recreates it.
  reseed: process.env.EXAMPLE_RESEED === '1',
  redisUrl: process.env.REDIS_URL,
  jwtSecret,
  logger: { level: process.env.LOG_LEVEL ?? 'info' }
})

let closing = false
async function shutdown (signal: string): Promise<void> {
  if (closing) return
  closing = true
  app.log.info({ signal }, 'closing')
  // A close that hangs must not keep the process alive forever.
  setTimeout(() => process.exit(1), 10_000).unref()
  try {
    await app.close()
  } finally {
    await db.close()
  }
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    shutdown(signal).then(() => { process.exitCode = 0 }, (error) => {
      console.error(error)
      process.exitCode = 1
    })
  })
}

try {
  await app.listen({ port, host })
} catch (error) {
  app.log.error(error)
  await app.close()
  await db.close()
  process.exit(1)
}

const address = app.server.address()
const boundPort = typeof address === 'object' && address !== null ? address.port : port
const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
const base = `http://${urlHost}:${boundPort}`
const { users, teams, generations } = ids
const json = "-H 'content-type: application/json'"

const lines = [
  '',
  `fastify-authz-cache example on ${base} (database: ${db.label}${process.env.REDIS_URL ? `, redis: ${process.env.REDIS_URL}` : ''})`,
  '',
  '!! WARNING: the tokens below are signed with ' + (jwtSecret === undefined
    ? `the DEVELOPMENT secret in examples/app.ts (${JSON.stringify(DEV_JWT_SECRET.slice(0, 12) + '...')}).`
    : 'JWT_SECRET.'),
  '!! They are for development only: anyone can mint them. Set JWT_SECRET and issue real tokens elsewhere.',
  '',
  '# Sample tokens (valid 12 h). Paste these lines into your shell first:',
  `export ALICE='${tokens.alice}'   # owner of Studio, viewer of Labs`,
  `export BOB='${tokens.bob}'   # member of Studio`,
  `export CAROL='${tokens.carol}'   # viewer of Studio, owner of Labs`,
  `export DAVE='${tokens.dave}'   # in no team`,
  `export ERIN='${tokens.erin}'   # admin of Studio`,
  `export ADMIN='${tokens.admin}'   # scope authz:admin (the /_authz routes)`,
  '',
  '# A granted read: alice reads a Studio generation (200, media URLs from the cached decision)',
  `curl -s ${base}/generations/${generations.trailerShot1} -H "authorization: Bearer $ALICE"`,
  '',
  '# A denied read: dave is in no team (403 FST_AUTHZ_FORBIDDEN)',
  `curl -si ${base}/generations/${generations.trailerShot1} -H "authorization: Bearer $DAVE"`,
  '',
  '# Revocation takes effect at once:',
  '# 1. bob (member) may edit the generation (200; the grant is now cached for 10 minutes)',
  `curl -si -X PUT ${base}/generations/${generations.trailerShot1} -H "authorization: Bearer $BOB" ${json} -d '{"prompt":"slow dolly shot, rain"}'`,
  '# 2. alice (owner) demotes bob to viewer ... or removes him from the team',
  `curl -s -X PUT ${base}/teams/${teams.studio}/members/${users.bob} -H "authorization: Bearer $ALICE" ${json} -d '{"role":"viewer"}'`,
  `curl -s -X DELETE ${base}/teams/${teams.studio}/members/${users.bob} -H "authorization: Bearer $ALICE"`,
  '# 3. bob\'s next edit is a 403 at once, without waiting for any TTL',
  `curl -si -X PUT ${base}/generations/${generations.trailerShot1} -H "authorization: Bearer $BOB" ${json} -d '{"prompt":"again"}'`,
  '',
  '# More: team settings (admin or owner), a project, your profile, a generation whose project id is in the body',
  `curl -s -X PUT ${base}/teams/${teams.studio}/settings -H "authorization: Bearer $ERIN" ${json} -d '{"watermark":true}'`,
  `curl -s ${base}/projects/${ids.projects.trailer} -H "authorization: Bearer $CAROL"`,
  `curl -s ${base}/me -H "authorization: Bearer $DAVE"`,
  `curl -si -X POST ${base}/generations -H "authorization: Bearer $ERIN" ${json} -d '{"projectId":"${ids.projects.stills}","prompt":"a mug on the moon"}'`,
  '',
  '# Cache stats, as JSON and as Prometheus text',
  `curl -s ${base}/_authz/stats -H "authorization: Bearer $ADMIN"`,
  `curl -s ${base}/_authz/stats -H "authorization: Bearer $ADMIN" -H 'accept: text/plain'`,
  '',
  '# Invalidate everything cached for a user (here, on every instance with REDIS_URL)',
  `curl -s -X POST ${base}/_authz/invalidate -H "authorization: Bearer $ADMIN" ${json} -d '{"userId":"${users.alice}"}'`,
  '',
  'Ctrl-C stops the server.',
  ''
]
process.stdout.write(lines.join('\n') + '\n')
