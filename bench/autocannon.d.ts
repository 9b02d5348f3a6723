/**
 * The part of autocannon's programmatic API the benches use (autocannon
 * ships no type declarations).
 */
declare module 'autocannon' {
  namespace autocannon {
    interface Request {
      method?: string
      path?: string
      headers?: Record<string, string>
      body?: string | Buffer
      setupRequest?: (request: Request, context: Record<string, unknown>) => Request | undefined
    }

    /** One connection. */
    interface Client {
      /** Replaces this connection's request list (pipelining 1 only). */
      setRequests (requests: Request[]): void
    }

    interface Options {
      url: string
      connections?: number
      pipelining?: number
      /** Seconds. */
      duration?: number
      amount?: number
      timeout?: number
      workers?: number
      headers?: Record<string, string>
      requests?: Request[]
      /** Called once per connection, as it is created. */
      setupClient?: (client: Client) => void
      /** Sample interval of `requests` (ms, default 1000). */
      sampleInt?: number
      title?: string
    }

    interface Histogram {
      average: number
      mean: number
      stddev: number
      min: number
      max: number
      total: number
      p0_001: number
      p0_01: number
      p0_1: number
      p1: number
      p2_5: number
      p10: number
      p25: number
      p50: number
      p75: number
      p90: number
      p97_5: number
      p99: number
      p99_9: number
      p99_99: number
      p99_999: number
    }

    interface Result {
      title?: string
      url: string
      connections: number
      pipelining: number
      /** Seconds from start (including building requests and connecting) to the last sample. */
      duration: number
      /** Number of `requests` samples (one per `sampleInt`). */
      samples: number
      start: Date
      finish: Date
      errors: number
      timeouts: number
      mismatches: number
      non2xx: number
      resets: number
      '1xx': number
      '2xx': number
      '3xx': number
      '4xx': number
      '5xx': number
      /** Milliseconds. */
      latency: Histogram & { totalCount: number }
      /** Completed requests per sample (per second by default): `average` is req/s; `total` is every completed request. */
      requests: Histogram & { sent: number }
      throughput: Histogram
    }
  }

  function autocannon (options: autocannon.Options): Promise<autocannon.Result>

  export = autocannon
}
