import { test } from 'tap'
import { benchToken, buildServer, USER_ID } from '../bench/http-server.js'
import { INSTRUCTION_SCENARIOS, run, splitProfile } from '../bench/instructions.js'

// A callgrind profile in the format valgrind writes: name compression
// (`(n) name` defines, `(n)` refers, one table for fn= and cfn=), a callee's
// inclusive cost on the line after `calls=` (not the caller's own cost), and
// relative positions (`+1`).
const PROFILE = [
  'version: 1',
  'creator: callgrind-3.19.0',
  'events: Ir',
  'fn=(1) v8::internal::Heap::CollectGarbage(v8::internal::AllocationSpace)',
  '0 100',
  'fn=(2) v8::internal::compiler::PipelineImpl::OptimizeGraph(v8::internal::compiler::Linkage*)',
  '0 50',
  'fn=(3) Builtins_LoadIC',
  '0 300',
  'cfn=(4) v8::internal::Heap::MarkCompact()',
  'calls=2 0',
  '0 9999',
  'cfn=(5) v8::internal::Runtime_DefineKeyedOwnPropertyInLiteral(int, unsigned long*, v8::internal::Isolate*)',
  'calls=12 0',
  '0 7777',
  '+1 5',
  'fn=(4)',
  '0 200',
  'fn=(5)',
  '0 50',
  'fn=(6) node::os::GetHostname(v8::FunctionCallbackInfo<v8::Value> const&)',
  '0 0',
  'summary: 705',
  ''
].join('\n')

test('splitProfile: self cost by symbol, GC and JIT apart, callee inclusive lines not counted', async (t) => {
  const split = splitProfile(PROFILE)
  t.equal(split.total, 705, 'the summary line')
  t.equal(split.gc, 300, 'Heap::CollectGarbage and Heap::MarkCompact (named through cfn= first)')
  t.equal(split.compile, 50, 'the optimizing compiler')
  t.equal(split.rest, 355, 'LoadIC (300 + 5 at +1) and the runtime function (50), not the 9999 and 7777 inclusive lines')
  t.equal(split.markCompacts, 2)
  t.equal(split.runtimeCalls, 12)

  const noSummary = splitProfile(PROFILE.replace('summary: 705\n', ''))
  t.equal(noSummary.total, 705, 'without a summary line, the sum of self costs')
})

test('run: bad arguments are refused before anything is started', async (t) => {
  await t.rejects(run({ n1: 5, n2: 5 }), /n2 \(5\) must be greater than n1 \(5\)/)
  await t.rejects(run({ n1: 0 }), /n1 must be a positive integer/)
  await t.rejects(run({ scenarios: ['jwt', 'nope' as never] }), /unknown scenario "nope"/)
})

test('the counted scenarios are the apps they say: the route checked or not, the plugin registered or not', async (t) => {
  const expected: Record<string, { plugin: boolean, checked: boolean }> = {
    jwt: { plugin: false, checked: false },
    'jwt-flat': { plugin: false, checked: false },
    'jwt+plugin': { plugin: true, checked: false },
    plugin: { plugin: true, checked: true },
    'plugin+handler': { plugin: true, checked: true }
  }
  t.same([...INSTRUCTION_SCENARIOS].sort(), Object.keys(expected).sort())
  for (const scenario of INSTRUCTION_SCENARIOS) {
    const server = await buildServer(scenario, { ids: 5 })
    const { app } = server
    try {
      const url = '/generations/gen-000003/media'
      const mine = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${benchToken()}` } })
      t.equal(mine.statusCode, 200, `${scenario}: the bench user's request`)
      t.same(mine.json(), { generationId: 'gen-000003', media: 'ok' })
      t.equal(app.hasDecorator('authz'), expected[scenario].plugin, `${scenario}: plugin registered`)

      // A valid token of a user the backend grants nothing: only a checked route refuses it.
      const other = (app as unknown as { jwt: { sign: (payload: object) => string } }).jwt.sign({ sub: `${USER_ID}-other` })
      const refused = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${other}` } })
      t.equal(refused.statusCode, expected[scenario].checked ? 403 : 200, `${scenario}: another user's request`)
      const missing = await app.inject({ method: 'GET', url })
      t.equal(missing.statusCode, 401, `${scenario}: no token`)
      // The other user's check is a miss (predicted loads may follow it); an unchecked route asks nothing.
      if (expected[scenario].checked) t.ok(server.counter.calls >= 1, `${scenario}: the other user's check went to the resolver`)
      else t.equal(server.counter.calls, 0, `${scenario}: no resolver call after warm-up`)
    } finally {
      await app.close()
      await server.cleanup()
    }
  }
})
