/**
 * Counters for `GET /metrics`, in the Prometheus text exposition format (version 0.0.4):
 * requests by route and status, tokens (prompt, cached, evaluated, generated), prompt-cache hits,
 * latencies as histograms, and the engine's gauges (busy slots, queue).
 *
 * @module
 */
import type { EngineResult, EngineStats } from "./engine.ts";

/** Upper bounds (seconds) of the latency histogram buckets. */
const BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

class Histogram {
  readonly counts = new Array<number>(BUCKETS.length).fill(0);
  sum = 0;
  count = 0;

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]) this.counts[i]++;
  }

  lines(name: string, labels = ""): string[] {
    const sep = labels ? "," : "";
    return [
      ...BUCKETS.map((b, i) => `${name}_bucket{${labels}${sep}le="${b}"} ${this.counts[i]}`),
      `${name}_bucket{${labels}${sep}le="+Inf"} ${this.count}`,
      `${name}_sum${labels ? `{${labels}}` : ""} ${this.sum}`,
      `${name}_count${labels ? `{${labels}}` : ""} ${this.count}`,
    ];
  }
}

export class Metrics {
  readonly #requests = new Map<string, number>(); // `route status` → count
  readonly #duration = new Map<string, Histogram>(); // route → request durations
  readonly #firstToken = new Histogram();
  #generations = 0;
  #finish = new Map<string, number>();

  request(route: string, status: number, ms: number): void {
    const key = `${route} ${status}`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    let h = this.#duration.get(route);
    if (!h) this.#duration.set(route, h = new Histogram());
    h.observe(ms / 1000);
  }

  started(): void {
    this.#generations++;
  }

  firstToken(ms: number): void {
    this.#firstToken.observe(ms / 1000);
  }

  finished(result: EngineResult): void {
    this.#finish.set(result.finishReason, (this.#finish.get(result.finishReason) ?? 0) + 1);
  }

  render(stats: EngineStats): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, lines: string[]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...lines);
    };
    metric("deltaq_http_requests_total", "counter", "HTTP requests by route and status.", [...this.#requests].map(([k, n]) => {
      const [route, status] = k.split(" ");
      return `deltaq_http_requests_total{route="${route}",status="${status}"} ${n}`;
    }));
    metric(
      "deltaq_http_request_duration_seconds",
      "histogram",
      "Time from request to the end of the response (streams: to the last event).",
      [...this.#duration].flatMap(([route, h]) => h.lines("deltaq_http_request_duration_seconds", `route="${route}"`)),
    );
    metric("deltaq_time_to_first_token_seconds", "histogram", "Time from submitting a generation to its first token.", this.#firstToken.lines("deltaq_time_to_first_token_seconds"));
    metric("deltaq_generations_total", "counter", "Generations started.", [`deltaq_generations_total ${this.#generations}`]);
    metric("deltaq_generations_finished_total", "counter", "Generations ended, by engine finish reason.", [...this.#finish].map(([r, n]) => `deltaq_generations_finished_total{reason="${r}"} ${n}`));
    metric("deltaq_prompt_tokens_total", "counter", "Prompt tokens of all generations.", [`deltaq_prompt_tokens_total ${stats.promptTokens}`]);
    metric("deltaq_prompt_tokens_cached_total", "counter", "Prompt tokens restored from cache instead of evaluated.", [`deltaq_prompt_tokens_cached_total ${stats.cachedTokens}`]);
    metric("deltaq_prompt_tokens_evaluated_total", "counter", "Prompt tokens evaluated.", [`deltaq_prompt_tokens_evaluated_total ${stats.evaluatedTokens}`]);
    metric("deltaq_generated_tokens_total", "counter", "Tokens generated.", [`deltaq_generated_tokens_total ${stats.generatedTokens}`]);
    metric("deltaq_prompt_cache_hits_total", "counter", "Prompt-cache lookups that restored a checkpoint.", [`deltaq_prompt_cache_hits_total ${stats.cache.hits}`]);
    metric("deltaq_prompt_cache_misses_total", "counter", "Prompt-cache lookups that found nothing.", [`deltaq_prompt_cache_misses_total ${stats.cache.misses}`]);
    metric("deltaq_prompt_cache_entries", "gauge", "Checkpoints held in the prompt cache.", [`deltaq_prompt_cache_entries ${stats.cache.entries}`]);
    metric("deltaq_prompt_cache_bytes", "gauge", "Bytes held by the prompt cache.", [`deltaq_prompt_cache_bytes ${stats.cache.bytes}`]);
    metric("deltaq_prompt_cache_capacity_bytes", "gauge", "The prompt cache's budget.", [`deltaq_prompt_cache_capacity_bytes ${stats.cache.capacityBytes}`]);
    metric("deltaq_slots", "gauge", "Slots (sequences decoded together).", [`deltaq_slots ${stats.slots}`]);
    metric("deltaq_slots_busy", "gauge", "Slots running a generation.", [`deltaq_slots_busy ${stats.active}`]);
    metric("deltaq_requests_queued", "gauge", "Generations waiting for a slot.", [`deltaq_requests_queued ${stats.queued}`]);
    return out.join("\n") + "\n";
  }
}
