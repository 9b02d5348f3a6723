/** The machine and package versions a benchmark ran on, for its report. */
import os from 'node:os'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Machine {
  cpu: string
  cores: number
  totalMemoryGb: number
  platform: string
  node: string
  v8: string
  loadAverage: number[]
}

export function machine (): Machine {
  const cpus = os.cpus()
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    totalMemoryGb: Math.round(os.totalmem() / 1024 ** 3),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    v8: process.versions.v8,
    loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100)
  }
}

function packageRoot (): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'node_modules'))) return dir
    const parent = dirname(dir)
    if (parent === dir) return process.cwd()
    dir = parent
  }
}

/** Installed versions of `names`, and this package's own as `fastify-authz-cache`. */
export function packageVersions (names: string[]): Record<string, string> {
  const root = packageRoot()
  const read = (path: string): string => {
    try {
      return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version
    } catch {
      return 'not installed'
    }
  }
  const out: Record<string, string> = {}
  for (const name of names) out[name] = read(join(root, 'node_modules', name, 'package.json'))
  out['fastify-authz-cache'] = read(join(root, 'package.json'))
  return out
}

export function describeMachine (m: Machine, packages: Record<string, string>): string {
  return `${m.cpu}, ${m.cores} cores, ${m.totalMemoryGb} GiB, ${m.platform}; Node ${m.node} (V8 ${m.v8}); ` +
    `${Object.entries(packages).map(([k, v]) => `${k} ${v}`).join(', ')}; load average at start ${m.loadAverage.join(' ')}`
}

/** The fields a benchmark result starts with: when it started, how long it took, where and with what it ran. */
export interface RunInfo {
  startedAt: string
  durationMs: number
  machine: Machine
  packages: Record<string, string>
}

/** Call when a benchmark starts; the function it returns, called at the end, gives its `RunInfo`. */
export function startRun (packages: string[]): () => RunInfo {
  const t0 = performance.now()
  const startedAt = new Date().toISOString()
  const m = machine()
  return () => ({ startedAt, durationMs: Math.round(performance.now() - t0), machine: m, packages: packageVersions(packages) })
}
