// An artifact's JSON files checked before any field is used, by the rules every edgegen runtime applies:
// first edgegen's declared schemas (edgegen/core/schema/*.schema.json, copied beside this module by
// `edgegen web`), then the cross-references a schema cannot state (edgegen/core/manifest_check.py and
// edgegen/core/launch_plan.py in Python, runtimes/native/src/artifact.c and plan.c in C).
//
// The schema interpreter knows exactly the JSON Schema 2020-12 keywords those documents use; a schema
// with any other keyword is refused, so that no rule is ever skipped silently.

export class ArtifactError extends Error {
  constructor(message) { super(message); this.name = "ArtifactError"; }
}

export const REBUILD = "rebuild the artifact or copy it again from its source";
const MAX_TENSOR_BYTES = 1n << 36n;
const MAX_INVOCATIONS = 1n << 32n;
const MESSAGE_CHARS = 160;
export const DTYPE_BYTES = {float32: 4, float16: 2, int32: 4, int64: 8, uint8: 1, int8: 1, uint32: 4};
const INT_RANGE = {int32: [-(2 ** 31), 2 ** 31 - 1], int64: [-(2 ** 63), 2 ** 63 - 1], uint8: [0, 255],
                   int8: [-128, 127], uint32: [0, 2 ** 32 - 1]};
const ANNOTATIONS = new Set(["$schema", "$id", "title", "description", "$defs"]);
const KEYWORDS = new Set(["type", "required", "properties", "additionalProperties", "propertyNames",
  "minProperties", "const", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
  "maxLength", "pattern", "items", "minItems", "maxItems", "allOf", "if", "then", "$ref"]);

function short(text) {
  return text.length <= MESSAGE_CHARS ? text : text.slice(0, MESSAGE_CHARS) + "…";
}

function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

function typeOk(type, v) {
  if (Array.isArray(type)) return type.some((t) => typeOk(t, v));
  switch (type) {
    case "object": return isObject(v);
    case "array": return Array.isArray(v);
    case "string": return typeof v === "string";
    case "integer": return typeof v === "number" && Number.isInteger(v);
    case "number": return typeof v === "number";
    case "boolean": return typeof v === "boolean";
    case "null": return v === null;
    default: throw new Error(`schema type ${type} is not known to this runtime`);
  }
}

function equal(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

/** A compiled schema: `check(document, where)` throws ArtifactError naming the first field that breaks it. */
export class Schema {
  constructor(name, document) {
    this.name = name;
    this.defs = document.$defs || {};
    this.patterns = new Map();
    this.root = document;
    this._vet(document, "#");
  }

  _vet(node, at) {       // every keyword known, every $ref resolvable, every pattern compilable
    if (!isObject(node)) return;
    for (const [k, v] of Object.entries(node)) {
      if (ANNOTATIONS.has(k)) continue;
      if (!KEYWORDS.has(k)) throw new Error(`schema ${this.name}: keyword ${k} at ${at} is not known to this runtime`);
      if (k === "$ref" && !(v.startsWith("#/$defs/") && v.slice(8) in this.defs))
        throw new Error(`schema ${this.name}: $ref ${v} at ${at} does not resolve`);
      if (k === "pattern") this._regex(v);
      if (["properties"].includes(k)) for (const [p, s] of Object.entries(v)) this._vet(s, `${at}/${k}/${p}`);
      else if (k === "allOf") v.forEach((s, i) => this._vet(s, `${at}/allOf/${i}`));
      else if (["additionalProperties", "propertyNames", "items", "if", "then"].includes(k)) this._vet(v, `${at}/${k}`);
    }
    for (const [d, s] of Object.entries(node.$defs || {})) this._vet(s, `#/$defs/${d}`);
  }

  _regex(source) {
    if (!this.patterns.has(source)) this.patterns.set(source, new RegExp(source, "u"));
    return this.patterns.get(source);
  }

  /** The first error as [path, message], or null. */
  errorOf(value, node = this.root, path = []) {
    if (node === true) return null;
    if (node === false) return [path, "no value is allowed here"];
    if (node.$ref) return this.errorOf(value, this.defs[node.$ref.slice(8)], path);
    if (node.type !== undefined && !typeOk(node.type, value))
      return [path, `${JSON.stringify(value)?.slice(0, 60)} is not of type '${node.type}'`];
    if ("const" in node && !equal(value, node.const))
      return [path, `${JSON.stringify(node.const)} was expected`];
    if (node.enum && !node.enum.some((e) => equal(e, value)))
      return [path, `${JSON.stringify(value)} is not one of ${JSON.stringify(node.enum)}`];
    if (typeof value === "number") {
      if (node.minimum !== undefined && value < node.minimum) return [path, `${value} is less than the minimum of ${node.minimum}`];
      if (node.maximum !== undefined && value > node.maximum) return [path, `${value} is greater than the maximum of ${node.maximum}`];
      if (node.exclusiveMinimum !== undefined && value <= node.exclusiveMinimum)
        return [path, `${value} is less than or equal to the minimum of ${node.exclusiveMinimum}`];
      if (node.exclusiveMaximum !== undefined && value >= node.exclusiveMaximum)
        return [path, `${value} is greater than or equal to the maximum of ${node.exclusiveMaximum}`];
    }
    if (typeof value === "string") {
      const length = [...value].length;     // code points, as JSON Schema counts
      if (node.minLength !== undefined && length < node.minLength) return [path, `${JSON.stringify(value)} is too short`];
      if (node.maxLength !== undefined && length > node.maxLength) return [path, `${JSON.stringify(value).slice(0, 60)} is too long`];
      if (node.pattern !== undefined && !this._regex(node.pattern).test(value))
        return [path, `${JSON.stringify(value)} does not match ${JSON.stringify(node.pattern)}`];
    }
    if (Array.isArray(value)) {
      if (node.minItems !== undefined && value.length < node.minItems) return [path, `an array of ${value.length} is too short (at least ${node.minItems})`];
      if (node.maxItems !== undefined && value.length > node.maxItems) return [path, `an array of ${value.length} is too long (at most ${node.maxItems})`];
      if (node.items !== undefined)
        for (let i = 0; i < value.length; i++) {
          const e = this.errorOf(value[i], node.items, [...path, i]);
          if (e) return e;
        }
    }
    if (isObject(value)) {
      const keys = Object.keys(value);
      for (const r of node.required || [])
        if (!(r in value)) return [path, `'${r}' is a required property`];
      if (node.minProperties !== undefined && keys.length < node.minProperties)
        return [path, `should have at least ${node.minProperties} properties`];
      for (const k of keys) {
        if (node.propertyNames !== undefined) {
          const e = this.errorOf(k, node.propertyNames, [...path, k]);
          if (e) return [e[0], `property name ${e[1]}`];
        }
        const sub = node.properties && k in node.properties ? node.properties[k] : node.additionalProperties;
        if (node.additionalProperties === false && !(node.properties && k in node.properties))
          return [path, `additional property '${k}' is not allowed`];
        if (sub === undefined) continue;      // (an undefined node would mean the root: errorOf's default)
        const e = this.errorOf(value[k], sub, [...path, k]);
        if (e) return e;
      }
    }
    for (const s of node.allOf || []) {
      const e = this.errorOf(value, s, path);
      if (e) return e;
    }
    if (node.if !== undefined && this.errorOf(value, node.if, path) === null && node.then !== undefined) {
      const e = this.errorOf(value, node.then, path);
      if (e) return e;
    }
    return null;
  }

  check(document, where) {
    const error = this.errorOf(document);
    if (error) {
      const field = error[0].join("/") || "(top level)";
      throw new ArtifactError(`${where}: field ${field}: ${short(error[1])} (schema ${this.name}); ${REBUILD}.`);
    }
  }
}

/** The three schemas, fetched from `base` (a URL of the folder that holds NAME.schema.json). */
export async function loadSchemas(base, fetchImpl = fetch) {
  const out = {};
  for (const name of ["manifest", "launch_plan", "scheduler_config"]) {
    const url = new URL(`${name}.schema.json`, base);
    const response = await fetchImpl(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}; the site lacks edgegen's schemas, write it again with edgegen web`);
    out[name] = new Schema(name, await response.json());
  }
  return out;
}

export function checkRelpath(rel, where) {
  const parts = rel.split("/").filter((p) => p !== "");
  if (rel.startsWith("/") || rel.includes("\\") || parts.length === 0 || parts.some((p) => p === "." || p === ".."))
    throw new ArtifactError(`${where}: path ${JSON.stringify(rel)} leaves the artifact folder; ${REBUILD}.`);
}

export function numel(shape) { return shape.reduce((a, d) => a * BigInt(d), 1n); }

function checkTensors(specs, where, kind) {
  const names = specs.map((s) => s.name);
  const twice = [...new Set(names.filter((n, i) => names.indexOf(n) !== i))].sort();
  if (twice.length) throw new ArtifactError(`${where}: ${kind} ${JSON.stringify(twice.slice(0, 3))} are named twice; ${REBUILD}.`);
  for (const s of specs) {
    if (numel(s.shape) * BigInt(DTYPE_BYTES[s.dtype]) > MAX_TENSOR_BYTES)
      throw new ArtifactError(`${where}: ${kind.slice(0, -1)} '${s.name}' has shape [${s.shape}], over the 64 GiB a tensor may have; ${REBUILD}.`);
    if (s.range !== undefined && (!(s.dtype in INT_RANGE) || s.range[0] > s.range[1]))
      throw new ArtifactError(`${where}: ${kind.slice(0, -1)} '${s.name}': range [${s.range}] does not fit its dtype ${s.dtype}; ${REBUILD}.`);
  }
}

/** Schema first, then the cross-references (edgegen/core/manifest_check.py: check_manifest). */
export function checkManifest(manifest, schemas, where) {
  schemas.manifest.check(manifest, where);
  const files = manifest.files;
  for (const rel of Object.keys(files)) checkRelpath(rel, `${where}: files`);
  for (const [name, comp] of Object.entries(manifest.components)) {
    const at = `${where}: component '${name}'`;
    for (const kind of ["inputs", "outputs", "weights"]) checkTensors(comp[kind] || [], at, kind);
    for (const [role, rel] of Object.entries(comp.files)) {
      checkRelpath(rel, `${at}: files/${role}`);
      if (!(rel in files))
        throw new ArtifactError(`${at}: files/${role} names ${rel}, which the manifest's files section does not list (no checksum); ${REBUILD}.`);
    }
  }
  const pipeline = manifest.pipeline;
  const referenced = {};
  if ("scheduler_config" in pipeline) referenced["pipeline/scheduler_config"] = pipeline.scheduler_config;
  if ("tokenizer" in pipeline) for (const key of ["vocab", "merges"]) referenced[`pipeline/tokenizer/${key}`] = pipeline.tokenizer[key];
  for (const [field, rel] of Object.entries(referenced)) {
    checkRelpath(rel, `${where}: ${field}`);
    if (!(rel in files)) throw new ArtifactError(`${where}: ${field} names ${rel}, which the files section does not list; ${REBUILD}.`);
  }
  if (pipeline.kind === "class-conditional-dit") {
    if (pipeline.sample_shape[0] !== pipeline.batch)
      throw new ArtifactError(`${where}: pipeline/sample_shape [${pipeline.sample_shape}] does not hold pipeline/batch ${pipeline.batch} samples; ${REBUILD}.`);
    const high = Object.keys(pipeline.id2label).filter((k) => Number(k) >= pipeline.null_class);
    if (high.length)
      throw new ArtifactError(`${where}: pipeline/id2label names class ${high[0]}, not below the null class ${pipeline.null_class}; ${REBUILD}.`);
  }
}

/** The tensor whose storage `name` uses (a view's base, followed to the end) and its entry. */
export function resolve(plan, name) {
  let entry = plan.tensors[name];
  while (entry.storage === "view") { name = entry.of; entry = plan.tensors[name]; }
  return [name, entry];
}

/** edgegen/core/launch_plan.py: check_plan. */
export function checkPlan(plan, schemas, where) {
  const rebuild = "rebuild the artifact";
  if (!isObject(plan) || plan.format !== "edgegen-launch-plan")
    throw new ArtifactError(`${where}: not an edgegen launch plan (format ${JSON.stringify(isObject(plan) ? plan.format : null)}); ${rebuild}.`);
  if (plan.version !== 1)
    throw new ArtifactError(`${where}: launch plan version ${JSON.stringify(plan.version)} is not 1; rebuild the artifact with this edgegen or upgrade edgegen.`);
  schemas.launch_plan.check(plan, where);
  const tensors = plan.tensors;
  for (const [name, t] of Object.entries(tensors)) {
    const need = numel(t.shape) * BigInt(DTYPE_BYTES[t.dtype]);
    if (BigInt(t.bytes) !== need)
      throw new ArtifactError(`${where}: tensors/${name}: bytes ${t.bytes}, its shape [${t.shape}] of ${t.dtype} needs ${need}; ${rebuild}.`);
    if (t.storage === "arena" && t.offset + t.bytes > plan.arena_bytes)
      throw new ArtifactError(`${where}: tensors/${name} lies outside the arena; ${rebuild}.`);
    if (t.storage === "view") {
      const seen = new Set([name]);
      let base = t;
      while (base.storage === "view") {
        if (!(base.of in tensors)) throw new ArtifactError(`${where}: tensors/${name} is a view of unknown tensor '${base.of}'; ${rebuild}.`);
        if (seen.has(base.of)) throw new ArtifactError(`${where}: tensors/${name}: its views form a cycle; ${rebuild}.`);
        seen.add(base.of);
        base = tensors[base.of];
      }
      if (base.bytes < t.bytes) throw new ArtifactError(`${where}: tensors/${name} is a view larger than the tensor it views; ${rebuild}.`);
    }
  }
  for (const role of ["inputs", "outputs"])
    for (const [key, name] of Object.entries(plan[role]))
      if (!(name in tensors) || resolve(plan, name)[1].storage !== "arena")
        throw new ArtifactError(`${where}: ${role}/${key} names '${name}', not a tensor in the arena; ${rebuild}.`);
  plan.launches.forEach((launch, i) => {
    const missing = launch.args.filter((a) => !(a in tensors));
    if (missing.length)
      throw new ArtifactError(`${where}: launch ${i} (${launch.kernel}) names undeclared tensors ${JSON.stringify(missing.slice(0, 3))}; ${rebuild}.`);
    const program = plan.programs[launch.program];
    if (program === undefined) throw new ArtifactError(`${where}: launch ${i} names unknown program '${launch.program}'; ${rebuild}.`);
    if (!program.kernels.includes(launch.kernel))
      throw new ArtifactError(`${where}: launch ${i}: kernel '${launch.kernel}' is not in program '${launch.program}'; ${rebuild}.`);
    for (const scalar of launch.scalars) {
      const range = INT_RANGE[scalar.dtype];
      if (range && !(Number.isInteger(scalar.value) && range[0] <= scalar.value && scalar.value <= range[1]))
        throw new ArtifactError(`${where}: launch ${i}: scalar ${scalar.value} is not a ${scalar.dtype}; ${rebuild}.`);
    }
    const work = numel(launch.grid) * numel(launch.block);
    if (work > MAX_INVOCATIONS)
      throw new ArtifactError(`${where}: launch ${i}: grid [${launch.grid}] x block [${launch.block}] is ${work} work items, over ${MAX_INVOCATIONS}; ${rebuild}.`);
  });
}
