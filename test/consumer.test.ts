/**
 * The package as a user installs it: `npm pack`, installed in an empty
 * folder with the packages a user would add, then used from CommonJS and
 * ESM, and its `authz-cache perf` command run from there.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { test } from 'tap'

const root = fileURLToPath(new URL('..', import.meta.url))
const built = existsSync(join(root, 'dist/lib/index.js')) && existsSync(join(root, 'dist/examples/perf.js'))
const version = (name: string): string => (JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version

test('the packed package: require() from CommonJS, import from ESM, and the perf command', { skip: built ? false : 'not built: npm test builds before the unit tests', timeout: 300_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'authz-consumer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const packed = execFileSync(npm, ['pack', '--pack-destination', dir, '--json'], { cwd: root, encoding: 'utf8' })
  const [{ filename, files }] = JSON.parse(packed) as Array<{ filename: string, files: Array<{ path: string }> }>
  const paths = files.map((f) => f.path)
  t.ok(paths.includes('dist/lib/index.js') && paths.includes('dist/examples/perf.js'), 'the library and the perf workload are in the tarball')
  t.notOk(paths.some((p) => p.startsWith('dist/bench/') || p.startsWith('test/') || p.startsWith('dist/test/')), 'no benchmarks or tests')
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }))
  // The versions already in this checkout: npm finds them in its cache.
  const deps = ['fastify', '@fastify/jwt', '@electric-sql/pglite'].map((name) => `${name}@${version(name)}`)
  execFileSync(npm, ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', join(dir, filename), ...deps], { cwd: dir, encoding: 'utf8' })

  writeFileSync(join(dir, 'app.cjs'), `
const authz = require('fastify-authz-cache')
const Fastify = require('fastify')
const app = Fastify()
app.register(authz, { authenticate: false, admin: false, getUserId: () => 'u1', resolvers: { generation: async ({ id }) => ({ granted: id === 'g1' }) } })
app.get('/g/:id', { config: { authz: { generation: 'id', access: 'read' } } }, async () => 'ok')
app.ready().then(async () => {
  const codes = [(await app.inject('/g/g1')).statusCode, (await app.inject('/g/g2')).statusCode]
  console.log(JSON.stringify({ codes, AuthzCache: typeof authz.AuthzCache, named: typeof authz.authzCache }))
  await app.close()
})
`)
  const cjs = spawnSync(process.execPath, ['app.cjs'], { cwd: dir, encoding: 'utf8' })
  t.equal(cjs.status, 0, cjs.stderr)
  t.same(JSON.parse(cjs.stdout), { codes: [200, 403], AuthzCache: 'function', named: 'function' }, 'require() gives the plugin, and it guards a route')
  t.notMatch(cjs.stderr, /ExperimentalWarning|ERR_/, 'no warning')

  writeFileSync(join(dir, 'app.mjs'), `
import authzCache, { AuthzCache } from 'fastify-authz-cache'
const cache = new AuthzCache({ resolvers: { generation: async () => ({ granted: true }) } })
console.log(typeof authzCache, (await cache.getOrLoad('generation', 'u1', 'g1')).granted)
cache.close()
`)
  const esm = spawnSync(process.execPath, ['app.mjs'], { cwd: dir, encoding: 'utf8' })
  t.equal(esm.stdout.trim(), 'function true', esm.stderr)

  const bin = join(dir, 'node_modules/.bin/authz-cache')
  const help = spawnSync(bin, ['perf', '--help'], { cwd: dir, encoding: 'utf8' })
  t.equal(help.status, 0)
  t.match(help.stdout, /^usage: authz-cache perf/)
  t.match(help.stdout, 'DATABASE_URL')
  const run = spawnSync(bin, ['perf', '--config', 'development', '--iterations', '300', '--warmup', '0', '--latency-ms', '0', '--concurrency', '2', '--think-ms', '0'], { cwd: dir, encoding: 'utf8', timeout: 240_000 })
  t.ok(run.status === 0 || run.status === 1, `perf ran from the installed package (exit ${run.status}): ${run.stderr}`)
  t.match(run.stdout, /Average response time: [0-9.]+ ms per check/)
  t.match(run.stdout, '0 of 300 checks did not answer 200')

  // Without the embedded database, it says what to install.
  rmSync(join(dir, 'node_modules/@electric-sql'), { recursive: true, force: true })
  const missing = spawnSync(bin, ['perf', '--iterations', '10'], { cwd: dir, encoding: 'utf8', env: { ...process.env, DATABASE_URL: '' } })
  t.equal(missing.status, 2)
  t.match(missing.stderr, 'npm install @electric-sql/pglite')
})
