/**
 * The vocabulary as llama.cpp sees it: token texts, per-token attributes (from
 * `tokenizer.ggml.token_type`, adjusted by llama.cpp's by-text rules), the special token ids and
 * the end-of-generation set. Everything here follows llama.cpp's vocabulary loader, because these
 * attributes decide which tokens are matched in text and which ones end generation.
 */
import { DeltaqError } from "../errors.ts";
import type { Metadata } from "../gguf/read.ts";
import { TextIndex } from "./text-index.ts";

/** Token attributes (bit values as in llama.h's llama_token_attr). */
export const ATTR_UNKNOWN = 1 << 0;
export const ATTR_UNUSED = 1 << 1;
export const ATTR_NORMAL = 1 << 2;
export const ATTR_CONTROL = 1 << 3;
export const ATTR_USER_DEFINED = 1 << 4;
export const ATTR_BYTE = 1 << 5;

/** tokenizer.ggml.token_type values → attributes. */
const TYPE_TO_ATTR: Record<number, number> = {
  1: ATTR_NORMAL,
  2: ATTR_UNKNOWN,
  3: ATTR_CONTROL,
  4: ATTR_USER_DEFINED,
  5: ATTR_UNUSED,
  6: ATTR_BYTE,
};

/** Texts llama.cpp recognises as end-of-turn, FIM and end-of-generation tokens. */
const EOT_TEXTS = [
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "<｜end▁of▁sentence｜>",
  "<end_of_utterance>",
];
const EOM_TEXTS = ["<|eom_id|>"];
const FIM_PRE_TEXTS = [
  "<|fim_prefix|>",
  "<fim-prefix>",
  "<fim_prefix>",
  "<｜fim▁begin｜>",
  "<PRE>",
  "▁<PRE>",
  "<|code_prefix|>",
  "<|prefix|>",
];
const FIM_SUF_TEXTS = [
  "<|fim_suffix|>",
  "<fim-suffix>",
  "<fim_suffix>",
  "<｜fim▁hole｜>",
  "<SUF>",
  "▁<SUF>",
  "<|code_suffix|>",
  "<|suffix|>",
];
const FIM_MID_TEXTS = [
  "<|fim_middle|>",
  "<fim-middle>",
  "<fim_middle>",
  "<｜fim▁end｜>",
  "<MID>",
  "▁<MID>",
  "<|code_middle|>",
  "<|middle|>",
];
const FIM_PAD_TEXTS = ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS = ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS = ["<|file_sep|>"];
const EOG_TEXTS = new Set([
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
]);
/** gpt-oss tokens llama.cpp always renders (forced to user-defined). */
const ALWAYS_USER_DEFINED = new Set(["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"]);

/** Pre-tokenizer names (tokenizer.ggml.pre) deltaq supports, and the splitter each one uses. */
const PRE_TOKENIZERS: Record<string, "qwen2" | "qwen35"> = {
  // Names llama.cpp maps to its qwen2 pre-tokenizer with clean_spaces off (so detokenizing is
  // plain concatenation, as here).
  "qwen2": "qwen2",
  "deepseek-r1-qwen": "qwen2",
  "kormo": "qwen2",
  "f2llmv2": "qwen2",
  "hunyuan": "qwen2",
  "solar-open": "qwen2",
  "qwen35": "qwen35",
};

export interface Vocab {
  /** Token texts as stored (byte characters for normal tokens). */
  texts: string[];
  attrs: Uint8Array;
  /** Token text → id. */
  index: TextIndex;
  merges: string[];
  preTokenizer: "qwen2" | "qwen35";
  bosId: number | undefined;
  eosId: number | undefined;
  eotId: number | undefined;
  padId: number | undefined;
  addBos: boolean;
  addEos: boolean;
  eog: Set<number>;
}

function idOrUndefined(id: number): number | undefined {
  return id < 0 ? undefined : id;
}

/** Reads and checks the tokenizer metadata of a GGUF file. */
export function readVocab(meta: Metadata): Vocab {
  const file = meta.file;
  const model = meta.string("tokenizer.ggml.model", undefined);
  if (model === undefined) {
    throw new DeltaqError(`${file}: no tokenizer (metadata tokenizer.ggml.model is missing)`);
  }
  if (model !== "gpt2") {
    throw new DeltaqError(
      `${file}: unsupported tokenizer model "${model}" (deltaq supports byte-level BPE, "gpt2")`,
    );
  }
  const pre = meta.string("tokenizer.ggml.pre", undefined);
  const preTokenizer = pre === undefined ? undefined : PRE_TOKENIZERS[pre];
  if (preTokenizer === undefined) {
    throw new DeltaqError(
      `${file}: unsupported pre-tokenizer ${
        pre === undefined ? "(tokenizer.ggml.pre is missing)" : `"${pre}"`
      }; ` +
        `deltaq supports ${Object.keys(PRE_TOKENIZERS).map((p) => `"${p}"`).join(", ")}`,
    );
  }

  let texts = meta.strings("tokenizer.ggml.tokens");
  if (texts === undefined) {
    throw new DeltaqError(`${file}: required metadata key tokenizer.ggml.tokens is missing`);
  }
  // llama.cpp names empty entries "[EMPTY_<id>]" (on a copy: the metadata stays as read).
  if (texts.includes("")) texts = texts.map((t, i) => (t === "" ? `[EMPTY_${i}]` : t));
  const n = texts.length;
  if (n === 0) throw new DeltaqError(`${file}: tokenizer.ggml.tokens is empty`);
  const merges = meta.strings("tokenizer.ggml.merges");
  if (merges === undefined) {
    throw new DeltaqError(`${file}: required metadata key tokenizer.ggml.merges is missing`);
  }

  const index = new TextIndex(texts);
  if (index.duplicate) {
    const [a, b] = index.duplicate;
    throw new DeltaqError(
      `${file}: tokenizer.ggml.tokens lists ${JSON.stringify(texts[a])} twice (ids ${a} and ${b})`,
    );
  }

  const attrs = new Uint8Array(n).fill(ATTR_NORMAL);
  const types = meta.numbers("tokenizer.ggml.token_type");
  if (types !== undefined) {
    if (types.length < n) {
      throw new DeltaqError(`${file}: tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
    }
    for (let i = 0; i < n; i++) attrs[i] = TYPE_TO_ATTR[types[i]] ?? 0;
  }

  // Special ids: llama.cpp's gpt2 defaults (11), overridden by metadata ids inside the vocabulary.
  const special = (key: string, fallback = -1): number => {
    let id = fallback < n ? fallback : -1;
    const v = meta.uint(`tokenizer.ggml.${key}`, undefined);
    if (v !== undefined && v < n) id = v;
    return id;
  };
  const bosId = special("bos_token_id", 11);
  const eosId = special("eos_token_id", 11);
  let eotId = special("eot_token_id");
  let eomId = special("eom_token_id");
  const padId = special("padding_token_id");
  let fimPre = special("fim_pre_token_id");
  let fimSuf = special("fim_suf_token_id");
  let fimMid = special("fim_mid_token_id");
  let fimPad = special("fim_pad_token_id");
  let fimRep = special("fim_rep_token_id");
  let fimSep = special("fim_sep_token_id");
  if (fimPre < 0) fimPre = special("prefix_token_id");
  if (fimSuf < 0) fimSuf = special("suffix_token_id");
  if (fimMid < 0) fimMid = special("middle_token_id");

  const addBos = metaBool(meta, "tokenizer.ggml.add_bos_token") ?? false;
  const addEos = metaBool(meta, "tokenizer.ggml.add_eos_token") ?? false;

  // Tokens found by text become control tokens, even when the file types them otherwise.
  const findByText = (current: number, candidates: string[]): number => {
    if (current >= 0) return current;
    for (const t of candidates) {
      const id = index.get(t);
      if (id !== undefined) {
        attrs[id] |= ATTR_CONTROL;
        return id;
      }
    }
    return -1;
  };
  eotId = findByText(eotId, EOT_TEXTS);
  eomId = findByText(eomId, EOM_TEXTS);
  fimPre = findByText(fimPre, FIM_PRE_TEXTS);
  fimSuf = findByText(fimSuf, FIM_SUF_TEXTS);
  fimMid = findByText(fimMid, FIM_MID_TEXTS);
  fimPad = findByText(fimPad, FIM_PAD_TEXTS);
  fimRep = findByText(fimRep, FIM_REP_TEXTS);
  fimSep = findByText(fimSep, FIM_SEP_TEXTS);

  const eog = new Set<number>();
  for (const id of [fimPad, fimRep, fimSep]) if (id >= 0) eog.add(id);
  for (const t of EOG_TEXTS) {
    const id = index.get(t);
    if (id === undefined) continue;
    eog.add(id);
    attrs[id] |= ATTR_CONTROL;
  }
  for (const t of ALWAYS_USER_DEFINED) {
    const id = index.get(t);
    if (id !== undefined) attrs[id] = ATTR_USER_DEFINED;
  }
  for (const id of [eosId, eotId, eomId]) if (id >= 0) eog.add(id);

  // gpt-oss / solar-open: "<|end|>" ends a message, not the generation, when these are present.
  const eogHas = (t: string) => {
    const id = index.get(t);
    return id !== undefined && eog.has(id);
  };
  const endId = index.get("<|end|>");
  const hasCall = eogHas("<|call|>") || eogHas("<|calls|>");
  if (endId !== undefined && eog.has(endId) && hasCall && (eogHas("<|return|>") || eogHas("<|flush|>"))) {
    eog.delete(endId);
    attrs[endId] = ATTR_USER_DEFINED;
  }
  // gemma4: "</s>" is ordinary text when "<|tool_response>" is an end token.
  const sId = index.get("</s>");
  if (sId !== undefined && eog.has(sId) && eogHas("<|tool_response>")) {
    eog.delete(sId);
    attrs[sId] = ATTR_NORMAL;
  }

  return {
    texts,
    attrs,
    index,
    merges,
    preTokenizer,
    bosId: idOrUndefined(bosId),
    eosId: idOrUndefined(eosId),
    eotId: idOrUndefined(eotId),
    padId: idOrUndefined(padId),
    addBos,
    addEos,
    eog,
  };
}

function metaBool(meta: Metadata, key: string): boolean | undefined {
  const v = meta.get(key);
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new DeltaqError(`${meta.file}: metadata ${key} should be a bool`);
  return v;
}
