// edgegen's WebGPU runtime for the browser: a plain ES module (no bundler, no wasm) that runs an artifact
// built with `edgegen build ... --target webgpu`, as runtimes/webgpu.py runs it with wgpu-py.
//
//   import {load} from "./edgegen.js";
//   const pipe = await load("artifact/");            // a folder URL holding manifest.json
//   const out = await pipe.generate({labels: [7], seed: 1});
//
// Loading order, so that a page fails early and cheaply: manifest, launch plans and kernel sources are
// fetched and checked (the same rules as every edgegen runtime, runtimes/web/checks.js); then the
// adapter's limits are checked against what each plan needs, and only then are weights downloaded (or
// taken from the Cache API, keyed by their sha256). Compute pipelines are created asynchronously; a
// component's call records all its launches in one command encoder.

import {ArtifactError, DTYPE_BYTES, checkManifest, checkPlan, loadSchemas, resolve} from "./checks.js";
import {makeScheduler, normal, toUint8} from "./numerics.js";
import {CLIPTokenizer} from "./tokenizer.js";

export {ArtifactError} from "./checks.js";
export {normal, makeScheduler, toUint8, seedOf, spacedTimesteps} from "./numerics.js";
export {CLIPTokenizer};

/** The device cannot run the artifact (no WebGPU, a limit or feature short); the message says which. */
export class DeviceError extends Error {
  constructor(message) { super(message); this.name = "DeviceError"; }
}

export class InputError extends Error {
  constructor(message) { super(message); this.name = "InputError"; }
}

const MAX_GROUPS = 65535;
const WEIGHT_CACHE = "edgegen-weights-v1";
const BINDING = /@group\(0\) @binding\((\d+)\) var<(storage, read_write|storage, read|uniform)>/g;
const FUNCTION = /^\/\/-+\n\/\/ Function: (\w+)\n\/\/-+\n/m;
const PROGRAM_MARK = "// edgegen-program: ";
const SAFETENSORS_DTYPES = {F32: "float32", F16: "float16", I32: "int32", I64: "int64", U8: "uint8", I8: "int8", U32: "uint32"};
const pad = (n, to = 4) => Math.ceil(n / to) * to;

/** The kernel source file, one entry per `// edgegen-program: <name>` section (runtimes/launch_plan.py). */
export function splitPrograms(text) {
  const programs = {};
  let name = null, lines = [];
  for (const line of text.split(/(?<=\n)/)) {
    if (line.startsWith(PROGRAM_MARK)) {
      if (name !== null) programs[name] = lines.join("");
      name = line.slice(PROGRAM_MARK.length).trim();
      lines = [];
    } else lines.push(line);
  }
  if (name !== null) programs[name] = lines.join("");
  return programs;
}

/** TVM writes each kernel of a program as its own WGSL module after a `// Function:` header. */
export function kernelSources(program) {
  const parts = program.split(new RegExp(FUNCTION.source, "gm"));
  const out = {};
  for (let i = 1; i < parts.length - 1; i += 2) out[parts[i]] = parts[i + 1];
  return out;
}

const SCALAR_BYTES = {f32: 4, i32: 4, u32: 4, f16: 2, bool: 4};

/** Bytes of a WGSL type as a workgroup variable holds it (scalars, vectors, fixed arrays); 0 if unknown. */
function wgslBytes(type) {
  type = type.trim();
  if (type in SCALAR_BYTES) return SCALAR_BYTES[type];
  let m = /^vec([234])<(\w+)>$/.exec(type);
  if (m) return (m[1] === "3" ? 4 : Number(m[1])) * SCALAR_BYTES[m[2]];
  m = /^array<(.+),\s*(\d+)u?>$/.exec(type);
  if (m) return wgslBytes(m[1]) * Number(m[2]);
  return 0;
}

function workgroupBytes(source) {
  let total = 0;
  for (const m of source.matchAll(/var<workgroup>\s+\w+\s*:\s*([^;]+);/g)) total += wgslBytes(m[1]);
  return total;
}

// the adapter limits a plan can exceed, with what the user sees if it does
const LIMITS = ["maxBufferSize", "maxStorageBufferBindingSize", "maxStorageBuffersPerShaderStage",
  "maxBindingsPerBindGroup", "maxComputeInvocationsPerWorkgroup", "maxComputeWorkgroupSizeX", "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ", "maxComputeWorkgroupStorageSize", "maxComputeWorkgroupsPerDimension"];

function lowestBit(n) {        // n & -n, for offsets past 2**31 too
  let bit = 1;
  while (bit < 2 ** 30 && n % (2 * bit) === 0) bit *= 2;
  return bit;
}

/** What a component's plan asks of the device: {limits: {name: value}, alignment, features}. */
export function planNeeds(plan, sources) {
  const need = Object.fromEntries(LIMITS.map((k) => [k, 0]));
  const up = (k, v) => { need[k] = Math.max(need[k], v); };
  up("maxBufferSize", pad(Math.max(plan.arena_bytes, 256)));
  let alignment = 2 ** 30;     // the largest power of two that divides every arena offset
  for (const t of Object.values(plan.tensors)) {
    if (t.storage === "weight") { up("maxBufferSize", pad(t.bytes)); up("maxStorageBufferBindingSize", pad(t.bytes)); }
    if (t.storage === "arena" && t.offset > 0) alignment = Math.min(alignment, lowestBit(t.offset));
  }
  for (const launch of plan.launches) {
    const [gx, gy, gz] = launch.grid, [bx, by, bz] = launch.block;
    up("maxComputeInvocationsPerWorkgroup", bx * by * bz);
    up("maxComputeWorkgroupSizeX", bx); up("maxComputeWorkgroupSizeY", by); up("maxComputeWorkgroupSizeZ", bz);
    up("maxComputeWorkgroupsPerDimension", Math.max(Math.min(gx, MAX_GROUPS), gy, gx > MAX_GROUPS ? Math.ceil(gx / MAX_GROUPS) : gz));
    up("maxBindingsPerBindGroup", launch.args.length + 1);
    for (const a of launch.args) up("maxStorageBufferBindingSize", pad(Math.max(resolve(plan, a)[1].bytes, 4)));   // as _binding binds
  }
  for (const source of Object.values(sources)) {
    up("maxStorageBuffersPerShaderStage", [...source.matchAll(BINDING)].filter((m) => m[2] !== "uniform").length);
    up("maxComputeWorkgroupStorageSize", workgroupBytes(source));
  }
  const features = Object.values(plan.tensors).some((t) => t.dtype === "float16") ? ["shader-f16"] : [];
  return {limits: need, alignment, features};
}

function adapterName(adapter) {
  const i = adapter.info || {};
  const parts = [i.vendor, i.architecture, i.device, i.description].filter((p) => p);
  return (parts.join(" ") || "unknown adapter") + (i.isFallbackAdapter ? " (software fallback)" : "");
}

/** Throw DeviceError naming every limit (or feature) of `adapter` that the component's plan exceeds. */
export function checkLimits(needs, adapter, where) {
  const short = [];
  for (const [k, v] of Object.entries(needs.limits))
    if (v > adapter.limits[k]) short.push(`${k}: needs ${v}, the adapter allows ${adapter.limits[k]}`);
  if (needs.alignment % adapter.limits.minStorageBufferOffsetAlignment !== 0)
    short.push(`minStorageBufferOffsetAlignment: the plan's arena offsets are multiples of ${needs.alignment}, the adapter needs ${adapter.limits.minStorageBufferOffsetAlignment}`);
  for (const f of needs.features)
    if (!adapter.features.has(f)) short.push(`feature ${f}: the plan stores float16 tensors, the adapter lacks it (rebuild with --precision fp32)`);
  if (short.length)
    throw new DeviceError(`${where} does not fit this WebGPU adapter (${adapterName(adapter)}): ${short.join("; ")}. `
      + `Rebuild the artifact for a device profile within these limits (edgegen build --target webgpu), or use a device that allows more.`);
}

async function sha256Hex(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The artifact's files, each fetched once and checked against the manifest's size and sha256. */
class ArtifactFiles {
  constructor(base, manifest, stats, useCache) {
    this.base = base;
    this.manifest = manifest;
    this.stats = stats;
    this.useCache = useCache && typeof caches !== "undefined";
    this.canHash = typeof crypto !== "undefined" && crypto.subtle !== undefined;
  }

  async _download(rel) {
    const url = new URL(rel, this.base);
    let response;
    try { response = await fetch(url); } catch (e) { throw new ArtifactError(`${url}: ${e.message}; is the site still served?`); }
    if (!response.ok) throw new ArtifactError(`${url}: HTTP ${response.status}; the artifact on the site lacks ${rel}, write the site again with edgegen web.`);
    const buffer = await response.arrayBuffer();
    await this._verify(rel, buffer);
    return buffer;
  }

  async _verify(rel, buffer) {
    const entry = this.manifest.files[rel];
    if (buffer.byteLength !== entry.bytes)
      throw new ArtifactError(`${rel}: ${buffer.byteLength} bytes, the manifest says ${entry.bytes}; the artifact is damaged, copy it again from its source.`);
    if (this.canHash && (await sha256Hex(buffer)) !== entry.sha256)   // crypto.subtle: secure contexts only
      throw new ArtifactError(`${rel}: sha256 differs from the manifest's; the artifact is damaged, copy it again from its source.`);
  }

  async text(rel) { return new TextDecoder("utf-8", {fatal: true}).decode(await this._download(rel)); }

  async json(rel) {
    try { return JSON.parse(await this.text(rel)); } catch (e) {
      if (e instanceof ArtifactError) throw e;
      throw new ArtifactError(`${rel}: not valid JSON (${e.message}); rebuild the artifact or copy it again from its source.`);
    }
  }

  /** Weights: from the Cache API when a file of the same sha256 was downloaded before. */
  async weights(rel) {
    const entry = this.manifest.files[rel];
    const key = new URL(`edgegen-weights/${entry.sha256}`, this.base).href;
    let cache = null;
    if (this.useCache) {
      try { cache = await caches.open(WEIGHT_CACHE); } catch { cache = null; }   // e.g. storage disabled
    }
    if (cache) {
      const hit = await cache.match(key);
      if (hit) {
        const buffer = await hit.arrayBuffer();
        if (buffer.byteLength === entry.bytes) { this.stats.weightBytesFromCache += buffer.byteLength; return buffer; }
        await cache.delete(key);
      }
    }
    const buffer = await this._download(rel);
    this.stats.weightBytesDownloaded += buffer.byteLength;
    if (cache) await cache.put(key, new Response(buffer.slice(0)));
    return buffer;
  }
}

/** safetensors bytes -> {name: {dtype, shape, bytes: Uint8Array}} (views into `buffer`). */
export function parseSafetensors(buffer, where) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 8) throw new ArtifactError(`${where}: too short for a safetensors file; rebuild the artifact.`);
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > buffer.byteLength) throw new ArtifactError(`${where}: header overruns the file; rebuild the artifact.`);
  let header;
  try { header = JSON.parse(new TextDecoder("utf-8", {fatal: true}).decode(new Uint8Array(buffer, 8, headerLength))); } catch (e) {
    throw new ArtifactError(`${where}: header is not JSON (${e.message}); rebuild the artifact.`);
  }
  const out = {};
  const dataStart = 8 + headerLength;
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const dtype = SAFETENSORS_DTYPES[t.dtype];
    const [begin, end] = t.data_offsets || [];
    if (!dtype || !(Number.isInteger(begin) && Number.isInteger(end) && begin <= end && dataStart + end <= buffer.byteLength))
      throw new ArtifactError(`${where}: tensor '${name}' has dtype ${t.dtype} or offsets [${t.data_offsets}] this runtime cannot read; rebuild the artifact.`);
    out[name] = {dtype, shape: t.shape, bytes: new Uint8Array(buffer, dataStart + begin, end - begin)};
  }
  return out;
}

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

function floatToHalf(v) {      // round to nearest even, as numpy's astype(float16)
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer)[0];
  const sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, mant = u & 0x7fffff;
  if (exp === 255) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000, shift = 14 - e;
    let h = m >> shift;
    const rest = m & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1))) h += 1;
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1;
  return h;
}

const TYPED = {float32: Float32Array, int32: Int32Array, uint32: Uint32Array, uint8: Uint8Array, int8: Int8Array, int64: BigInt64Array};

/** Host values as the bytes of a plan tensor of `dtype`. */
function toBytes(values, dtype) {
  if (dtype === "float16") return new Uint8Array(Uint16Array.from(values, floatToHalf).buffer);
  const T = TYPED[dtype];
  const arr = values instanceof T ? values : T.from(values, dtype === "int64" ? BigInt : (v) => v);
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

function fromBytes(bytes, dtype, hostDtype) {
  const copy = bytes.slice().buffer;
  if (dtype === "float16") return Float32Array.from(new Uint16Array(copy), halfToFloat);
  const arr = new TYPED[dtype](copy);
  return hostDtype && hostDtype !== dtype ? TYPED[hostDtype].from(arr) : arr;
}

function scalarBytes(scalar) {
  const size = DTYPE_BYTES[scalar.dtype];
  const v = new DataView(new ArrayBuffer(size));
  ({float32: () => v.setFloat32(0, scalar.value, true), float16: () => v.setUint16(0, floatToHalf(scalar.value), true),
    int32: () => v.setInt32(0, scalar.value, true), uint32: () => v.setUint32(0, scalar.value, true),
    int64: () => v.setBigInt64(0, BigInt(scalar.value), true), uint8: () => v.setUint8(0, scalar.value),
    int8: () => v.setInt8(0, scalar.value)})[scalar.dtype]();
  return new Uint8Array(v.buffer);
}

/** One component's plan on a GPUDevice: arena, weights, pipelines and bind groups made once; `run`
 * writes the inputs, records every launch in one command encoder, and reads the outputs back. */
export class PlanSession {
  constructor(device, name, component, plan, sources, kernelsFile) {
    this.device = device;
    this.name = name;
    this.component = component;
    this.plan = plan;
    this.sources = sources;
    this.kernelsFile = kernelsFile;
  }

  uploadWeights(tensors, weightsFile) {
    const usage = GPUBufferUsage;
    this.weights = {};
    for (const [n, t] of Object.entries(this.plan.tensors)) {
      if (t.storage !== "weight") continue;
      const w = tensors[n];
      if (!w || w.dtype !== t.dtype || JSON.stringify(w.shape) !== JSON.stringify(t.shape)) {
        const got = w ? `${w.dtype}[${w.shape}]` : "absent";
        throw new ArtifactError(`${weightsFile}: weight '${n}' is ${got}, the plan says ${t.dtype}[${t.shape}]; rebuild the artifact.`);
      }
      const buffer = this.device.createBuffer({size: pad(w.bytes.byteLength), usage: usage.STORAGE, mappedAtCreation: true});
      new Uint8Array(buffer.getMappedRange()).set(w.bytes);
      buffer.unmap();
      this.weights[n] = buffer;
    }
    this.arena = this.device.createBuffer({size: pad(Math.max(this.plan.arena_bytes, 256)),
      usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST});
  }

  _layout(source) {
    const kinds = {"storage, read_write": "storage", "storage, read": "read-only-storage", uniform: "uniform"};
    return this.device.createBindGroupLayout({entries: [...source.matchAll(BINDING)].map((m) => (
      {binding: Number(m[1]), visibility: GPUShaderStage.COMPUTE, buffer: {type: kinds[m[2]]}}))});
  }

  _binding(name) {
    const [base, entry] = resolve(this.plan, name);
    if (entry.storage === "weight") return {buffer: this.weights[base]};
    return {buffer: this.arena, offset: entry.offset, size: pad(Math.max(entry.bytes, 4))};
  }

  /** Compile every kernel (createComputePipelineAsync, all at once) and bind every launch. */
  async createPipelines(onKernel = () => {}) {
    const keys = [...new Set(this.plan.launches.map((l) => `${l.program}\u0000${l.kernel}`))];
    let done = 0;
    const pipelines = new Map(await Promise.all(keys.map(async (key) => {
      const [program, kernel] = key.split("\u0000");
      const source = kernelSources(this.sources[program])[kernel];
      if (source === undefined)
        throw new ArtifactError(`${this.kernelsFile}: program '${program}' has no kernel '${kernel}'; rebuild the artifact.`);
      const layout = this._layout(source);
      const module = this.device.createShaderModule({code: source});
      let pipeline;
      try {
        pipeline = await this.device.createComputePipelineAsync({layout: this.device.createPipelineLayout({bindGroupLayouts: [layout]}),
          compute: {module, entryPoint: kernel}});
      } catch (e) {
        const info = await module.getCompilationInfo();
        const lines = info.messages.filter((m) => m.type === "error").map((m) => `${m.lineNum}:${m.linePos} ${m.message}`);
        throw new ArtifactError(`component '${this.name}': compiling WGSL kernel '${kernel}' of ${this.kernelsFile} failed: ${lines.join("; ") || e.message}`);
      }
      onKernel(++done, keys.length);
      return [key, [pipeline, layout]];
    })));
    this.device.pushErrorScope("validation");
    this.launches = this.plan.launches.map((launch) => {
      const [pipeline, layout] = pipelines.get(`${launch.program}\u0000${launch.kernel}`);
      const [gx, gy, gz] = launch.grid;
      if (gx > MAX_GROUPS && gz > 1) throw new ArtifactError(`launch of ${launch.kernel}: a grid of ${gx} x ${gy} x ${gz} cannot fold x into z`);
      const dispatch = gx <= MAX_GROUPS ? [gx, gy, gz] : [MAX_GROUPS, gy, Math.ceil(gx / MAX_GROUPS)];
      const parts = [...launch.scalars.map(scalarBytes), new Uint8Array(new Uint32Array([gx - 1]).buffer)];
      const podBytes = parts.reduce((a, p) => a + p.length, 0);
      const uniform = this.device.createBuffer({size: pad(podBytes, 16), usage: GPUBufferUsage.UNIFORM, mappedAtCreation: true});
      const pod = new Uint8Array(uniform.getMappedRange());
      let at = 0;
      for (const p of parts) { pod.set(p, at); at += p.length; }
      uniform.unmap();
      const entries = launch.args.map((a, i) => ({binding: i, resource: this._binding(a)}));
      entries.push({binding: launch.args.length, resource: {buffer: uniform}});
      return {pipeline, group: this.device.createBindGroup({layout, entries}), dispatch, kernel: launch.kernel};
    });
    const error = await this.device.popErrorScope();
    if (error) throw new ArtifactError(`component '${this.name}': binding the launches of ${this.kernelsFile} failed: ${error.message}`);
    const outputs = this.component.outputs.map((spec) => {
      const [, entry] = resolve(this.plan, this.plan.outputs[spec.name]);
      const t = this.plan.tensors[this.plan.outputs[spec.name]];
      return {spec, offset: entry.offset, bytes: t.bytes, dtype: t.dtype};
    });
    this.outputs = outputs;
    this.readback = this.device.createBuffer({size: pad(outputs.reduce((a, o) => a + pad(o.bytes), 0)),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST});
  }

  _checkInputs(inputs) {
    const where = `component '${this.name}'`;
    const names = this.component.inputs.map((s) => s.name);
    const missing = names.filter((n) => !(n in inputs)), extra = Object.keys(inputs).filter((n) => !names.includes(n));
    if (missing.length || extra.length)
      throw new InputError(`${where}: expected inputs ${JSON.stringify(names)}; missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(extra)}.`);
    for (const spec of this.component.inputs) {
      const values = inputs[spec.name];
      const count = spec.shape.reduce((a, d) => a * d, 1);
      if (values.length !== count)
        throw new InputError(`${where}: input '${spec.name}' has ${values.length} values, its shape [${spec.shape}] holds ${count}.`);
      if (spec.range) {
        const bad = Array.prototype.find.call(values, (v) => v < spec.range[0] || v > spec.range[1]);
        if (bad !== undefined) throw new InputError(`${where}: input '${spec.name}' holds ${bad}, outside its range [${spec.range}].`);
      }
    }
  }

  /** inputs: {name: typed array in the component's dtype} -> {name: typed array of the host dtype}. */
  async run(inputs) {
    this._checkInputs(inputs);
    const queue = this.device.queue;
    for (const spec of this.component.inputs) {
      const [, entry] = resolve(this.plan, this.plan.inputs[spec.name]);
      let bytes = toBytes(inputs[spec.name], this.plan.tensors[this.plan.inputs[spec.name]].dtype);
      if (bytes.byteLength % 4) {            // writeBuffer moves whole 4-byte words
        const padded = new Uint8Array(pad(bytes.byteLength));
        padded.set(bytes);
        bytes = padded;
      }
      queue.writeBuffer(this.arena, entry.offset, bytes);
    }
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const l of this.launches) {
      pass.setPipeline(l.pipeline);
      pass.setBindGroup(0, l.group);
      pass.dispatchWorkgroups(...l.dispatch);
    }
    pass.end();
    let at = 0;
    for (const o of this.outputs) { encoder.copyBufferToBuffer(this.arena, o.offset, this.readback, at, pad(o.bytes)); at += pad(o.bytes); }
    queue.submit([encoder.finish()]);
    await this.readback.mapAsync(GPUMapMode.READ);
    const data = new Uint8Array(this.readback.getMappedRange());
    const out = {};
    at = 0;
    for (const o of this.outputs) { out[o.spec.name] = fromBytes(data.subarray(at, at + o.bytes), o.dtype, o.spec.dtype); at += pad(o.bytes); }
    this.readback.unmap();
    return out;
  }

  destroy() {
    for (const b of Object.values(this.weights || {})) b.destroy();
    this.arena?.destroy();
    this.readback?.destroy();
  }
}

/** Class-conditional generation with a DiT artifact (pixel space), as runtimes/class_conditional.py. */
export class ClassConditionalPipeline {
  constructor(manifest, sessions, schedulerConfig, device, adapterName, stats) {
    const cfg = manifest.pipeline;
    this.manifest = manifest;
    this.sessions = sessions;
    this.transformer = sessions.transformer;
    this.batch = cfg.batch;
    this.sampleShape = cfg.sample_shape;
    this.channels = cfg.in_channels;
    this.nullClass = cfg.null_class;
    this.id2label = Object.fromEntries(Object.entries(cfg.id2label).map(([k, v]) => [Number(k), v]));
    this.label2id = {};
    for (const [i, names] of Object.entries(this.id2label)) for (const n of names.split(",")) this.label2id[n.trim().toLowerCase()] = i;
    this.sampling = cfg.sampling || {};
    this.schedulerConfig = schedulerConfig;
    this.device = device;
    this.adapterName = adapterName;
    this.stats = stats;
  }

  /** Class ids from ints or names ('7', 'seven'), one per image. */
  labelIds(labels) {
    if (!Array.isArray(labels)) labels = [labels];
    return labels.map((label) => {
      if (typeof label === "string") {
        const key = label.trim().toLowerCase();
        if (!(key in this.label2id)) throw new InputError(`unknown class label ${JSON.stringify(label)}; this model knows ${JSON.stringify(Object.values(this.id2label))}.`);
        return Number(this.label2id[key]);
      }
      if (!(Number.isInteger(label) && label >= 0 && label < this.nullClass)) throw new InputError(`class id ${label} is out of range 0..${this.nullClass - 1}.`);
      return label;
    });
  }

  /** One batch: `labels` and `noise` fill the artifact's batch exactly. */
  async denoise(labels, noise, steps, guidanceScale, scheduler, onStep) {
    const sched = makeScheduler(this.schedulerConfig, scheduler);
    sched.setTimesteps(steps);
    const n = this.batch, c = this.channels;
    const per = this.sampleShape.slice(1).reduce((a, d) => a * d, 1);
    const [, co, h, w] = this.transformer.component.outputs[0].shape;
    const y = Int32Array.from([...labels, ...Array(n).fill(this.nullClass)]);
    const sigma = Math.fround(sched.initNoiseSigma);
    let x = Float32Array.from(noise, (v) => Math.fround(v * sigma));
    const g = Math.fround(guidanceScale);
    for (let i = 0; i < sched.timesteps.length; i++) {
      const t = sched.timesteps[i];
      const both = new Float32Array(2 * x.length);
      both.set(x); both.set(x, x.length);
      const inp = sched.scaleModelInput(both, i);
      const out = (await this.transformer.run({sample: inp, timestep: new Float32Array(2 * n).fill(t), class_labels: y})).noise_pred;
      const guided = new Float32Array(x.length);
      for (let b = 0; b < n; b++)
        for (let j = 0; j < c * h * w; j++) {
          const cond = out[b * co * h * w + j], uncond = out[(n + b) * co * h * w + j];
          guided[b * per + j] = guidanceScale > 1 ? Math.fround(uncond + Math.fround(g * Math.fround(cond - uncond))) : cond;
        }
      x = sched.step(guided, i, x);
      if (onStep) await onStep(i, t, x);
    }
    return x;
  }

  /** Images for `labels`: {images: Uint8Array [N, H, W, C], samples: Float32Array [N, C, H, W], shape, timings}.
   * onStep({done, total}) after each denoising step of each batch. */
  async generate({labels, steps, guidanceScale, seed, noise, scheduler = null, onStep} = {}) {
    const ids = this.labelIds(labels);
    steps = steps ?? this.sampling.steps ?? 25;
    const guidance = guidanceScale ?? this.sampling.guidance_scale ?? 4.0;
    const per = this.sampleShape.slice(1).reduce((a, d) => a * d, 1);
    if (noise === undefined) noise = normal(seed, ids.length * per);
    else if (noise.length !== ids.length * per) throw new InputError(`noise must have ${ids.length * per} values for ${ids.length} labels, got ${noise.length}`);
    const t0 = performance.now();
    const total = steps * Math.ceil(ids.length / this.batch);
    let done = 0;
    const samples = new Float32Array(ids.length * per);
    for (let start = 0; start < ids.length; start += this.batch) {
      const chunk = ids.slice(start, start + this.batch);
      const padCount = this.batch - chunk.length;       // fill the static batch; padded outputs are dropped
      const z = new Float32Array(this.batch * per);
      z.set(noise.subarray(start * per, (start + chunk.length) * per));
      for (let p = 0; p < padCount; p++) z.set(noise.subarray(start * per, (start + 1) * per), (chunk.length + p) * per);
      const x = await this.denoise([...chunk, ...Array(padCount).fill(chunk[0])], z, steps, guidance, scheduler,
        onStep ? () => onStep({done: ++done, total}) : null);
      samples.set(x.subarray(0, chunk.length * per), start * per);
    }
    const seconds = (performance.now() - t0) / 1000;
    const [c, h, w] = this.sampleShape.slice(1);
    return {images: toUint8(samples, ids.length, c, h, w), samples, shape: [ids.length, h, w, c],
      timings: {denoise_s: seconds, per_image_s: seconds / ids.length}};
  }

  close() {
    for (const s of Object.values(this.sessions)) s.destroy();
    this.device.destroy();
  }
}

/** Text to image with a Stable-Diffusion-shaped artifact (text encoder, UNet with classifier-free guidance,
 * VAE decoder), as runtimes/stable_diffusion.py. */
export class StableDiffusionPipeline {
  constructor(manifest, sessions, schedulerConfig, device, adapterName, stats, tokenizer) {
    const cfg = manifest.pipeline;
    this.manifest = manifest;
    this.sessions = sessions;
    this.schedulerConfig = schedulerConfig;
    this.device = device;
    this.adapterName = adapterName;
    this.stats = stats;
    this.tokenizer = tokenizer;
    this.latentShape = cfg.latent_shape;
    this.scalingFactor = cfg.vae_scaling_factor;
    this.sampling = {steps: 20, guidance_scale: 7.5};
  }

  /** {images: Uint8Array [1, H, W, 3], samples: the final latents, shape, timings}; onStep({done, total}). */
  async generate({prompt, negativePrompt = "", steps, guidanceScale, seed, latents, scheduler = null, onStep} = {}) {
    if (typeof prompt !== "string") throw new InputError("prompt must be one string: this artifact is built for one image per call.");
    steps = steps || this.sampling.steps;
    const guidance = guidanceScale ?? this.sampling.guidance_scale;
    const count = this.latentShape.reduce((a, d) => a * d, 1);
    if (latents === undefined) latents = normal(seed, count);
    else if (latents.length !== count) throw new InputError(`latents must have ${count} values (shape [${this.latentShape}]), got ${latents.length}.`);
    const timings = {};
    let t0 = performance.now();
    const ids = this.tokenizer.call([negativePrompt, prompt]);
    const emb = (await this.sessions.text_encoder.run({input_ids: ids})).last_hidden_state;
    timings.text_encoder_s = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const sched = makeScheduler(this.schedulerConfig, scheduler);
    sched.setTimesteps(steps);
    const sigma = Math.fround(sched.initNoiseSigma), g = Math.fround(guidance);
    let x = Float32Array.from(latents, (v) => Math.fround(v * sigma));
    for (let i = 0; i < sched.timesteps.length; i++) {
      const scaled = sched.scaleModelInput(x, i);
      const both = new Float32Array(2 * count);
      both.set(scaled); both.set(scaled, count);
      const noise = (await this.sessions.unet.run({sample: both, timestep: new Float32Array(2).fill(sched.timesteps[i]),
        encoder_hidden_states: emb})).out_sample;
      const guided = new Float32Array(count);
      for (let j = 0; j < count; j++) {
        const uncond = noise[j], cond = noise[count + j];
        guided[j] = guidance > 1 ? Math.fround(uncond + Math.fround(g * Math.fround(cond - uncond))) : cond;
      }
      x = sched.step(guided, i, x);
      if (onStep) await onStep({done: i + 1, total: sched.timesteps.length});
    }
    timings.denoise_s = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const scale = Math.fround(this.scalingFactor);
    const image = (await this.sessions.vae_decoder.run({latent_sample: Float32Array.from(x, (v) => Math.fround(v / scale))})).sample;
    const [n, c, h, w] = this.sessions.vae_decoder.component.outputs[0].shape;
    timings.vae_decoder_s = (performance.now() - t0) / 1000;
    timings.per_image_s = timings.text_encoder_s + timings.denoise_s + timings.vae_decoder_s;
    return {images: toUint8(image, n, c, h, w), samples: x, shape: [n, h, w, c], timings};
  }

  close() {
    for (const s of Object.values(this.sessions)) s.destroy();
    this.device.destroy();
  }
}

const PIPELINES = {"class-conditional-dit": ClassConditionalPipeline, "stable-diffusion": StableDiffusionPipeline};

async function requestAdapter(gpu) {
  if (!gpu) throw new DeviceError("this browser has no WebGPU (navigator.gpu is missing); use a browser with WebGPU "
    + "(Chrome or Edge 113+, Safari 26+, Firefox 141+), over https or on localhost; Chromium on Linux needs --enable-unsafe-webgpu.");
  const adapter = await gpu.requestAdapter({powerPreference: "high-performance"});
  if (!adapter) throw new DeviceError("navigator.gpu.requestAdapter() found no WebGPU adapter; enable WebGPU in the browser's "
    + "settings (Chromium on Linux: --enable-unsafe-webgpu) or use a machine with a supported GPU.");
  return adapter;
}

/**
 * Load the artifact at `artifactUrl` (a folder URL; manifest.json inside). Options:
 *   schemaUrl: the folder holding edgegen's *.schema.json (default: ./schema/ beside this module);
 *   onProgress({stage, done, total, message}): stages manifest, limits, weights, pipelines;
 *   cache: keep weights in the Cache API by sha256 (default true); gpu: navigator.gpu by default.
 * Returns the artifact's pipeline; `pipe.stats` says how many weight bytes came from the network and cache.
 */
export async function load(artifactUrl, {schemaUrl, onProgress = () => {}, cache = true, gpu} = {}) {
  const t0 = performance.now();
  const base = new URL(artifactUrl, globalThis.location?.href);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  const schemas = await loadSchemas(schemaUrl ?? new URL("./schema/", import.meta.url));
  onProgress({stage: "manifest", message: "reading the manifest"});
  const manifestUrl = new URL("manifest.json", base);
  const response = await fetch(manifestUrl);
  if (!response.ok) throw new ArtifactError(`${manifestUrl}: HTTP ${response.status}; no artifact there (build one with edgegen build --target webgpu, then edgegen web).`);
  let manifest;
  try { manifest = JSON.parse(await response.text()); } catch (e) { throw new ArtifactError(`${manifestUrl}: not valid JSON (${e.message}); rebuild the artifact.`); }
  checkManifest(manifest, schemas, "manifest.json");
  const kind = manifest.pipeline.kind;
  if (!(kind in PIPELINES))
    throw new ArtifactError(`manifest.json: pipeline kind '${kind}' has no browser pipeline yet (this runtime runs ${JSON.stringify(Object.keys(PIPELINES))}); run it with edgegen run instead.`);
  for (const [name, comp] of Object.entries(manifest.components))
    if (comp.backend !== "webgpu")
      throw new ArtifactError(`manifest.json: component '${name}' is built for backend '${comp.backend}', not webgpu; rebuild with edgegen build --target webgpu.`);
  const stats = {weightBytesDownloaded: 0, weightBytesFromCache: 0};
  const files = new ArtifactFiles(base, manifest, stats, cache);

  const parts = {};
  for (const [name, comp] of Object.entries(manifest.components)) {
    for (const role of ["plan", "kernels", "weights"])
      if (!(role in comp.files)) throw new ArtifactError(`component '${name}': the manifest names no ${role} file (files/${role}); rebuild the artifact.`);
    const plan = await files.json(comp.files.plan);
    checkPlan(plan, schemas, comp.files.plan);
    const programs = splitPrograms(await files.text(comp.files.kernels));
    const missing = Object.keys(plan.programs).filter((p) => !(p in programs));
    if (missing.length) throw new ArtifactError(`${comp.files.kernels}: kernel source lacks programs ${JSON.stringify(missing.slice(0, 3))}; rebuild the artifact.`);
    const sources = {};
    for (const launch of plan.launches) {
      const src = kernelSources(programs[launch.program])[launch.kernel];
      if (src !== undefined) sources[`${launch.program}/${launch.kernel}`] = src;
    }
    for (const role of ["inputs", "outputs"])
      for (const spec of comp[role]) {
        const t = plan[role][spec.name] !== undefined ? plan.tensors[plan[role][spec.name]] : undefined;
        const same = t && (t.dtype === spec.dtype || (t.dtype.startsWith("float") && spec.dtype.startsWith("float")));
        if (!same || JSON.stringify(t.shape) !== JSON.stringify(spec.shape))
          throw new ArtifactError(`${comp.files.plan}: ${role}/${spec.name} does not match the manifest's ${spec.dtype}[${spec.shape}]; rebuild the artifact.`);
      }
    parts[name] = {comp, plan, programs, sources};
  }
  let schedulerConfig = null;
  if (manifest.pipeline.scheduler_config) {
    schedulerConfig = await files.json(manifest.pipeline.scheduler_config);
    schemas.scheduler_config.check(schedulerConfig, manifest.pipeline.scheduler_config);
    makeScheduler(schedulerConfig);     // unsupported options fail here, before any download
  }
  let tokenizer = null;
  if (kind === "stable-diffusion") {
    const tok = manifest.pipeline.tokenizer;
    tokenizer = new CLIPTokenizer(await files.json(tok.vocab), await files.text(tok.merges), {maxLength: tok.max_length,
      bosToken: tok.bos_token, eosToken: tok.eos_token, padToken: tok.pad_token, unkToken: tok.unk_token}, tok.vocab);
  }

  onProgress({stage: "limits", message: "checking the adapter's limits"});
  const adapter = await requestAdapter(gpu ?? globalThis.navigator?.gpu);
  const name = adapterName(adapter);
  const required = {};
  const features = new Set();
  for (const [cname, p] of Object.entries(parts)) {
    p.needs = planNeeds(p.plan, p.sources);
    checkLimits(p.needs, adapter, `component '${cname}' (${p.comp.files.plan})`);
    for (const [k, v] of Object.entries(p.needs.limits)) required[k] = Math.max(required[k] ?? 0, v);
    p.needs.features.forEach((f) => features.add(f));
  }
  const device = await adapter.requestDevice({requiredLimits: required, requiredFeatures: [...features]});
  device.lost.then((info) => { stats.deviceLost = info.message; });

  const sessions = {};
  try {
    let fetched = 0;
    const totalBytes = Object.values(parts).reduce((a, p) => a + manifest.files[p.comp.files.weights].bytes, 0);
    for (const [cname, p] of Object.entries(parts)) {
      onProgress({stage: "weights", done: fetched, total: totalBytes, message: `weights of ${cname}`});
      const buffer = await files.weights(p.comp.files.weights);
      fetched += buffer.byteLength;
      const session = new PlanSession(device, cname, p.comp, p.plan, p.programs, p.comp.files.kernels);
      session.uploadWeights(parseSafetensors(buffer, p.comp.files.weights), p.comp.files.weights);
      sessions[cname] = session;
    }
    onProgress({stage: "weights", done: fetched, total: totalBytes, message: "weights loaded"});
    const t1 = performance.now();
    for (const [cname, s] of Object.entries(sessions))
      await s.createPipelines((done, total) => onProgress({stage: "pipelines", done, total, message: `compiling kernels of ${cname}`}));
    stats.pipelineSeconds = (performance.now() - t1) / 1000;
  } catch (e) {
    for (const s of Object.values(sessions)) s.destroy();
    device.destroy();
    throw e;
  }
  stats.loadSeconds = (performance.now() - t0) / 1000;
  return new PIPELINES[kind](manifest, sessions, schedulerConfig, device, name, stats, tokenizer);
}
