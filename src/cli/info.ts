/**
 * `deltaq info <model.gguf>`: metadata, tensor table and layer schedule, read from the header
 * only (no weights are touched).
 */
import { DeltaqError } from "../errors.ts";
import { Metadata } from "../gguf/read.ts";
import { readModelHeader } from "../gguf/split.ts";
import { ggmlTypeName, type GgufFile, type GgufValue } from "../gguf/types.ts";
import { type MoeConfig, type Qwen35Config, readConfig } from "../model/config.ts";
import { contextMemory } from "../model/model.ts";
import type { CacheType } from "../native/kernels.ts";

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[u]}`;
}

function describeValue(v: GgufValue): string {
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const items = Array.from(v as ArrayLike<unknown>);
    const head = items.slice(0, 6).map((x) => typeof x === "string" ? JSON.stringify(x) : String(x));
    return `[${head.join(", ")}${items.length > 6 ? `, … (${items.length} items)` : ""}]`;
  }
  if (typeof v === "string") {
    const oneLine = JSON.stringify(v);
    return oneLine.length > 120 ? `${oneLine.slice(0, 117)}…" (${v.length} chars)` : oneLine;
  }
  return String(v);
}

export function formatInfo(path: string, gguf: GgufFile, memory: MemoryQuery = {}, parts: string[] = [path]): string {
  const lines: string[] = [];
  lines.push(`file: ${path} (${formatBytes(gguf.fileSize)}, GGUF v${gguf.version}, ${gguf.tensors.length} tensors, alignment ${gguf.alignment})`);
  if (parts.length > 1) lines.push(`split into ${parts.length} files: ${parts.join(", ")}`);
  lines.push("", "metadata:");
  const width = Math.max(...[...gguf.metadata.keys()].map((k) => k.length), 0);
  for (const [k, v] of gguf.metadata) lines.push(`  ${k.padEnd(width)}  ${describeValue(v)}`);

  lines.push("", "tensors:");
  const rows = gguf.tensors.map((t) => [t.name, ggmlTypeName(t.type), `[${t.shape.join(", ")}]`, formatBytes(t.byteLength)]);
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), 0));
  for (const r of rows) lines.push(`  ${r[0].padEnd(widths[0])}  ${r[1].padEnd(widths[1])}  ${r[2].padEnd(widths[2])}  ${r[3].padStart(10)}`);
  const byType = new Map<string, number>();
  for (const t of gguf.tensors) byType.set(ggmlTypeName(t.type), (byType.get(ggmlTypeName(t.type)) ?? 0) + t.byteLength);
  lines.push(`  total by type: ${[...byType].map(([t, b]) => `${t} ${formatBytes(b)}`).join(", ")}`);

  lines.push("");
  try {
    const cfg = readConfig(new Metadata(gguf, path), gguf.tensors, path);
    const sched = cfg.layerTypes.map((t) => t === "attention" ? "A" : "D").join("");
    lines.push(`layer schedule (${cfg.nLayer} layers, A = gated full attention, D = Gated DeltaNet):`);
    lines.push(`  ${sched}`);
    lines.push(`  attention layers: ${cfg.layerTypes.flatMap((t, i) => t === "attention" ? [i] : []).join(", ")}`);
    if (cfg.nLayerStored > cfg.nLayer) lines.push(`  MTP blocks stored but not run: ${cfg.nLayerStored - cfg.nLayer}`);
    lines.push(
      `  E ${cfg.nEmbd}, ${cfg.moe ? "" : `FFN ${cfg.nFf}, `}vocab ${cfg.nVocab}, attention ${cfg.nHead}/${cfg.nHeadKv} heads × ${cfg.headDim} (${cfg.nRot} rotary dims, base ${cfg.ropeBase}), ` +
        `DeltaNet ${cfg.nKHeads} K / ${cfg.nVHeads} V heads × ${cfg.ssmHeadDim}, conv ${cfg.convKernel}, ${cfg.tiedEmbeddings ? "tied" : "untied"} LM head`,
    );
    if (cfg.moe) lines.push(...describeExperts(cfg.moe, cfg.nLayer));
    lines.push("", ...formatMemory(cfg, memory));
  } catch (e) {
    if (!(e instanceof DeltaqError)) throw e;
    lines.push(`not runnable by deltaq: ${e.message}`);
  }
  return lines.join("\n");
}

/** The expert layout of a mixture-of-experts model, for `info`. */
function describeExperts(moe: MoeConfig, nLayer: number): string[] {
  const used = [...new Set(moe.nExpertUsed)];
  const perToken = used.length === 1 ? `${used[0]} used per token` : `${used.join("/")} used per token (varies by layer)`;
  const fused = moe.fusedGateUp.filter(Boolean).length;
  const layout = fused === nLayer ? "fused gate/up tensors, ffn_gate_up_exps" : fused === 0
    ? "separate ffn_gate_exps and ffn_up_exps"
    : `fused gate/up in ${fused} of ${nLayer} layers`;
  return [
    `  experts (every layer's FFN): ${moe.nExpert} routed, ${perToken}, FFN ${moe.nFfExp} each (${layout})`,
    `  shared expert: FFN ${moe.nFfShexp}, gated by sigmoid(ffn_gate_inp_shexp·x); routing: softmax over all ${moe.nExpert}, top ${
      used.join("/")
    }, weights renormalised`,
  ];
}

/** Which context and cache types `info` reports memory for (besides its standard rows). */
export interface MemoryQuery {
  contextLength?: number;
  cacheTypeK?: CacheType;
  cacheTypeV?: CacheType;
}

/**
 * The memory a session needs at a few context lengths (the default, the requested one, the
 * trained one) for each KV cache type: it holds only what it has evaluated, so these are the
 * ceilings a full context reaches.
 */
function formatMemory(cfg: Qwen35Config, q: MemoryQuery): string[] {
  const trained = cfg.nCtxTrain || undefined;
  const contexts = [...new Set([4096, q.contextLength, 32768, trained].filter((n): n is number => !!n && (!trained || n <= trained)))]
    .sort((a, b) => a - b);
  const pairs: [CacheType, CacheType][] = [["f16", "f16"], ["q8_0", "q8_0"], ["q4_0", "q4_0"]];
  const asked: [CacheType, CacheType] = [q.cacheTypeK ?? "f16", q.cacheTypeV ?? "f16"];
  if (!pairs.some(([k, v]) => k === asked[0] && v === asked[1])) pairs.push(asked);
  const usable = pairs.filter(([k, v]) => {
    try {
      contextMemory(cfg, 1, { k, v });
      return true;
    } catch {
      return false;
    }
  });
  const recurrent = contextMemory(cfg, 1).recurrentBytes;
  const rows = [["context", ...usable.map(([k, v]) => k === v ? `KV ${k}` : `KV ${k}/${v}`)]];
  for (const n of contexts) {
    const label = `${n.toLocaleString("en-US")}${n === trained ? " (trained)" : ""}`;
    rows.push([label, ...usable.map(([k, v]) => formatBytes(contextMemory(cfg, n, { k, v }).kvCacheBytes))]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return [
    `memory per session at a full context (KV cache of ${cfg.layerTypes.filter((t) => t === "attention").length} attention layers; ` +
    `plus ${formatBytes(recurrent)} of recurrent state at any length):`,
    ...rows.map((r) => `  ${r.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ")}`),
    "  (a session holds memory only for the tokens it has; -c, -ctk and -ctv choose these when running)",
  ];
}

export function runInfo(path: string, memory: MemoryQuery = {}): void {
  const header = readModelHeader(path);
  console.log(formatInfo(path, header, memory, header.parts));
}
