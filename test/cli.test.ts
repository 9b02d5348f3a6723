import { test } from 'tap'
import { parseArgs } from '../lib/bin/authz-cache.js'

test('perf arguments: defaults, flags and both flag forms', async (t) => {
  t.same(parseArgs(['perf']), { config: 'production', iterations: 20_000, latencyMs: 120, concurrency: 16 })
  t.same(parseArgs(['perf', '--config', 'development', '--iterations=500', '--latency-ms', '0', '--concurrency', '4']),
    { config: 'development', iterations: 500, latencyMs: 0, concurrency: 4 })
  t.same(parseArgs(['perf', '--workload', 'views', '--think-ms=0', '--warming', 'off', '--batching', 'on', '--warmup', '0']),
    { config: 'production', iterations: 20_000, latencyMs: 120, concurrency: 16, workload: 'views', thinkMs: 0, warming: false, batching: true, warmup: 0 })
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
    [['perf', '--fast', '1'], 'unknown option "--fast"'],
    [['perf', '--workload', 'crawl'], '--workload must be projects, dashboard, scroll or views'],
    [['perf', '--warming', 'yes'], '--warming must be on or off'],
    [['perf', '--batching', '1'], '--batching must be on or off'],
    [['perf', '--think-ms', '-5'], '--think-ms must be an integer'],
    [['perf', '--warmup', 'x'], '--warmup must be an integer']
  ]
  for (const [argv, message] of cases) {
    t.throws(() => parseArgs(argv), { message: new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) }, argv.join(' '))
  }
})
