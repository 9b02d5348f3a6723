import { test } from 'tap'
import { parseArgs } from '../lib/bin/authz-cache.js'

test('perf arguments: defaults, flags and both flag forms', async (t) => {
  t.same(parseArgs(['perf']), { config: 'production', iterations: 20_000, latencyMs: 120, concurrency: 16 })
  t.same(parseArgs(['perf', '--config', 'development', '--iterations=500', '--latency-ms', '0', '--concurrency', '4']),
    { config: 'development', iterations: 500, latencyMs: 0, concurrency: 4 })
})

test('bad arguments are refused, naming the argument', async (t) => {
  const cases: Array<[string[], string]> = [
    [[], 'missing command'],
    [['bench'], 'unknown command "bench"'],
    [['perf', '--config', 'staging'], '--config must be development or production'],
    [['perf', '--iterations', '0'], '--iterations must be an integer'],
    [['perf', '--iterations', '1.5'], '--iterations must be an integer'],
    [['perf', '--iterations'], '--iterations needs a value'],
    [['perf', '--latency-ms', '-1'], '--latency-ms must be'],
    [['perf', '--concurrency', 'many'], '--concurrency must be'],
    [['perf', '--fast', '1'], 'unknown option "--fast"']
  ]
  for (const [argv, message] of cases) {
    t.throws(() => parseArgs(argv), { message: new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, argv.join(' '))
  }
})
