import { test } from 'tap'
import { benchToken, buildServer, USER_ID } from '../bench/http-server.js'
import { formatResult, INSTRUCTION_SCENARIOS, run, splitProfile, type InstructionsRun, type Split } from '../bench/instructions.js'
import { startRun } from '../bench/support/machine.js'

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

test('run: without valgrind the result says so, and the report prints it', async (t) => {
  const path = process.env.PATH
  process.env.PATH = ''
  try {
    const result = await run({ scenarios: ['jwt'] })
    t.match(result, { skipped: /valgrind is not installed/ })
    t.match(formatResult(result), /^Skipped: valgrind is not installed/)
  } finally {
    process.env.PATH = path
  }
})

test('formatResult: the slopes, the ratios to jwt and the targets as computed', async (t) => {
  const split = (total: number, gc: number): Split => ({ total, gc, compile: 0, rest: total - gc, markCompacts: 0.0008, runtimeCalls: 30 })
  const runOf = (scenario: 'jwt' | 'plugin', n: number, total: number): InstructionsRun =>
    ({ scenario, repeat: 0, n, counted: 'window', instructions: split(total, total / 4), wallMs: 1 })
  const text = formatResult({
    ...startRun([])(),
    valgrind: 'valgrind-test',
    nodeFlags: ['--predictable'],
    n1: 1000,
    n2: 11_000,
    repeats: 1,
    warmup: 10,
    ids: 1000,
    scenarios: [
      { scenario: 'jwt', perRequest: split(100_000, 40_000), slopes: [split(100_000, 40_000)], spread: { total: 0, rest: 0 } },
      { scenario: 'plugin', perRequest: split(102_000, 41_000), slopes: [split(102_000, 41_000)], spread: { total: 0.01, rest: 0 } }
    ],
    ratios: [{ scenario: 'plugin', total: 1.02, rest: 61_000 / 60_000 }],
    targets: [{ name: 'plugin at most 1.03x', pass: true, detail: '1.020x' }],
    runs: [runOf('jwt', 1000, 1e8), runOf('jwt', 11_000, 1.1e9), runOf('plugin', 1000, 1.02e8), runOf('plugin', 11_000, 1.122e9)]
  })
  t.match(text, '| plugin at most 1.03x | pass | 1.020x |')
  t.match(text, '| plugin | 102,000 | 61,000 | 41,000 | 0 | 1.020x | 1.017x | 1.0 % / 0.0 % | 8 | 30.0 |')
  t.match(text, '| jwt | 1 | 100,000,000 / 75,000,000 | 1,100,000,000 / 825,000,000 | 100,000 / 60,000 | window |')
  t.notMatch(text, 'The route check alone', 'no control scenario, no control line')
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
