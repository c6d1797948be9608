// The host-side numbers of a pipeline, equal to edgegen's numpy ones: seeded noise (runtimes/noise.py),
// the DDIM and Euler schedulers (runtimes/schedulers.py), and image rounding (runtimes/image.py).
// numpy computes these in float32; every operation here is rounded to float32 (Math.fround) in the same
// order, so that both sides agree to the last bit or nearly.

const f32 = Math.fround;
const MASK64 = (1n << 64n) - 1n;
const GAMMA = 0x9E3779B97F4A7C15n;
const M1 = 0xBF58476D1CE4E5B9n;
const M2 = 0x94D049BB133111EBn;

export class ConfigError extends Error {
  constructor(message) { super(message); this.name = "ConfigError"; }
}

/** A seed as a BigInt in 0..2**64-1 (from a Number, BigInt or decimal string); null draws a random one. */
export function seedOf(seed) {
  if (seed === null || seed === undefined || seed === "") {
    const words = crypto.getRandomValues(new Uint32Array(2));
    return (BigInt(words[0]) << 32n) | BigInt(words[1]);
  }
  let value;
  try { value = BigInt(seed); } catch { throw new RangeError(`seed must be an integer, got ${JSON.stringify(seed)}`); }
  if (value < 0n || value > MASK64) throw new RangeError(`seed must be in 0..2**64-1, got ${seed}`);
  return value;
}

/** Standard-normal float32 values drawn from `seed` exactly as runtimes/noise.py defines (SplitMix64 +
 * Box-Muller in double precision, each value rounded to float32). */
export function normal(seed, count) {
  let state = seedOf(seed);
  const out = new Float32Array(count);
  const next = () => {
    state = (state + GAMMA) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * M1) & MASK64;
    z = ((z ^ (z >> 27n)) * M2) & MASK64;
    return z ^ (z >> 31n);
  };
  for (let j = 0; j < count; j += 2) {
    const u1 = (Number(next() >> 11n) + 1) * 2 ** -53;
    const u2 = Number(next() >> 11n) * 2 ** -53;
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = (2 * Math.PI) * u2;
    out[j] = r * Math.cos(theta);
    if (j + 1 < count) out[j + 1] = r * Math.sin(theta);
  }
  return out;
}

/** numpy's round: half to even. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(start, stop, n) in float64, as numpy computes it. */
function linspace(start, stop, n) {
  const out = new Float64Array(n);
  if (n === 1) return Float64Array.of(start);
  const step = (stop - start) / (n - 1);
  for (let i = 0; i < n; i++) out[i] = i * step + start;
  if (n > 1) out[n - 1] = stop;
  return out;
}

const UNSUPPORTED = {trained_betas: null, thresholding: false, rescale_betas_zero_snr: false, use_karras_sigmas: false,
  use_exponential_sigmas: false, use_beta_sigmas: false, interpolation_type: "linear", timestep_type: "discrete",
  final_sigmas_type: "zero"};

function checkOptions(kind, config) {
  for (const [key, dflt] of Object.entries(UNSUPPORTED))
    if (key in config && config[key] !== dflt && config[key] !== null)
      throw new ConfigError(`${kind} scheduler option ${key}=${JSON.stringify(config[key])} is not implemented by edgegen's runtime (it supports ${key}=${JSON.stringify(dflt)}); change it in scheduler_config.json or pick another scheduler.`);
  const prediction = config.prediction_type ?? "epsilon";
  if (!["epsilon", "v_prediction", "sample"].includes(prediction))
    throw new ConfigError(`prediction_type ${JSON.stringify(prediction)} is not supported; use epsilon, v_prediction or sample.`);
}

function betas(config) {
  const n = config.num_train_timesteps ?? 1000;
  const start = config.beta_start ?? 0.0001;
  const end = config.beta_end ?? 0.02;
  const schedule = config.beta_schedule ?? "linear";
  if (schedule === "linear") return Float32Array.from(linspace(start, end, n));
  if (schedule === "scaled_linear") return Float32Array.from(linspace(start ** 0.5, end ** 0.5, n), (v) => f32(f32(v) * f32(v)));
  if (schedule === "squaredcos_cap_v2") {
    const alphaBar = (t) => Math.cos((t + 0.008) / 1.008 * Math.PI / 2) ** 2;
    return Float32Array.from({length: n}, (_, i) => Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999));
  }
  throw new ConfigError(`scheduler beta_schedule ${JSON.stringify(schedule)} is not supported; use linear, scaled_linear or squaredcos_cap_v2.`);
}

function alphasCumprod(config) {
  const b = betas(config);
  const out = new Float32Array(b.length);
  let acc = 1;
  // the running product in float64 and each entry rounded to float32, as torch.cumprod (runtimes/schedulers.py)
  for (let i = 0; i < b.length; i++) { acc = acc * f32(1 - b[i]); out[i] = acc; }
  return out;
}

/** The timesteps of runtimes/schedulers.py: _spaced_timesteps (integers, or float32 values). */
export function spacedTimesteps(config, steps, integer) {
  const n = config.num_train_timesteps ?? 1000;
  if (!(Number.isInteger(steps) && steps >= 1 && steps <= n)) throw new RangeError(`num_inference_steps must be in 1..${n}, got ${steps}`);
  const spacing = config.timestep_spacing ?? "leading";
  let t;
  if (spacing === "linspace") {
    const l = linspace(0, n - 1, steps);
    t = integer ? Array.from(l, roundHalfEven) : Array.from(l, f32);
  } else if (spacing === "leading") {
    const ratio = Math.floor(n / steps);
    t = Array.from({length: steps}, (_, i) => i * ratio + (config.steps_offset ?? 0));
  } else if (spacing === "trailing") {
    const step = -n / steps;
    const count = Math.ceil((0 - n) / step);
    return Array.from({length: count}, (_, i) => roundHalfEven(n + i * step) - 1);     // already descending
  } else {
    throw new ConfigError(`timestep_spacing ${JSON.stringify(spacing)} is not supported; use linspace, leading or trailing.`);
  }
  return t.reverse();
}

/** DDIMScheduler with eta=0 (deterministic). */
export class DDIM {
  constructor(config) {
    checkOptions("DDIM", config);
    this.config = config;
    this.numTrain = config.num_train_timesteps ?? 1000;
    this.alphasCumprod = alphasCumprod(config);
    this.finalAlphaCumprod = (config.set_alpha_to_one ?? true) ? 1 : this.alphasCumprod[0];
    this.prediction = config.prediction_type ?? "epsilon";
    this.clip = config.clip_sample ?? true;
    this.clipRange = f32(config.clip_sample_range ?? 1.0);
    this.initNoiseSigma = 1;
    this.timesteps = [];
  }

  setTimesteps(steps) {
    this.timesteps = spacedTimesteps(this.config, steps, true);
    this.ratio = Math.floor(this.numTrain / steps);
  }

  scaleModelInput(sample) { return sample; }

  step(output, index, sample) {
    const t = this.timesteps[index];
    const prev = t - this.ratio;
    const aT = this.alphasCumprod[t];
    const aPrev = prev >= 0 ? this.alphasCumprod[prev] : this.finalAlphaCumprod;
    const bT = f32(1 - aT);
    const sa = f32(Math.sqrt(aT)), sb = f32(Math.sqrt(bT));
    const sp = f32(Math.sqrt(aPrev)), sd = f32(Math.sqrt(f32(1 - aPrev)));
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i], m = output[i];
      let x0, eps;
      if (this.prediction === "epsilon") { x0 = f32(f32(x - f32(sb * m)) / sa); eps = m; }
      else if (this.prediction === "sample") { x0 = m; eps = f32(f32(x - f32(sa * x0)) / sb); }
      else { x0 = f32(f32(sa * x) - f32(sb * m)); eps = f32(f32(sa * m) + f32(sb * x)); }
      if (this.clip) x0 = Math.min(Math.max(x0, -this.clipRange), this.clipRange);
      out[i] = f32(f32(sp * x0) + f32(sd * eps));
    }
    return out;
  }
}

/** EulerDiscreteScheduler without stochastic churn (s_churn=0). */
export class EulerDiscrete {
  constructor(config) {
    checkOptions("Euler", config);
    this.config = config;
    const acp = alphasCumprod(config);
    this.trainSigmas = Float32Array.from(acp, (a) => f32(Math.sqrt(f32(f32(1 - a) / a))));
    this.prediction = config.prediction_type ?? "epsilon";
    this.timesteps = [];
    this.sigmas = new Float32Array(1);
  }

  get initNoiseSigma() {
    const top = Math.max(...this.sigmas);
    return ["linspace", "trailing"].includes(this.config.timestep_spacing ?? "linspace") ? top : (top ** 2 + 1) ** 0.5;
  }

  setTimesteps(steps) {
    this.timesteps = spacedTimesteps({timestep_spacing: "linspace", ...this.config}, steps, false);
    const s = this.trainSigmas;
    const interp = (x) => {          // np.interp over 0..len-1, in float64
      if (x <= 0) return s[0];
      if (x >= s.length - 1) return s[s.length - 1];
      const lo = Math.floor(x);
      const slope = (s[lo + 1] - s[lo]) / 1;
      return slope * (x - lo) + s[lo];
    };
    this.sigmas = Float32Array.from([...this.timesteps.map(interp), 0]);
  }

  scaleModelInput(sample, index) {
    const sigma = this.sigmas[index];
    const d = f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
    return Float32Array.from(sample, (x) => f32(x / d));
  }

  step(output, index, sample) {
    const sigma = this.sigmas[index];
    const dt = f32(this.sigmas[index + 1] - sigma);
    const s2 = f32(f32(sigma * sigma) + 1);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i], m = output[i];
      let x0;
      if (this.prediction === "epsilon") x0 = f32(x - f32(sigma * m));
      else if (this.prediction === "sample") x0 = m;
      else x0 = f32(f32(m * f32(-sigma / f32(Math.sqrt(s2)))) + f32(x / s2));
      const derivative = f32(f32(x - x0) / sigma);
      out[i] = f32(x + f32(derivative * dt));
    }
    return out;
  }
}

const SUPPORTED = {DDIMScheduler: DDIM, EulerDiscreteScheduler: EulerDiscrete};
const BY_NAME = {ddim: DDIM, euler: EulerDiscrete};

/** The scheduler a config names, or `override` ('ddim', 'euler') from the same config. */
export function makeScheduler(config, override = null) {
  if (override) {
    if (!(override in BY_NAME)) throw new ConfigError(`unknown scheduler ${JSON.stringify(override)}; choose one of ["ddim","euler"]`);
    return new BY_NAME[override](config);
  }
  const cls = SUPPORTED[config._class_name];
  if (!cls)
    throw new ConfigError(`scheduler ${JSON.stringify(config._class_name)} is not implemented by edgegen's runtime; it implements ${JSON.stringify(Object.keys(SUPPORTED).sort())}. Pass scheduler 'ddim' or 'euler' to use one of them with this config.`);
  return new cls(config);
}

/** Samples in [-1, 1] (N, C, H, W) -> uint8 (N, H, W, C), rounded as runtimes/image.py: to_uint8. */
export function toUint8(samples, n, c, h, w) {
  const out = new Uint8Array(n * h * w * c);
  for (let b = 0; b < n; b++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const v = Math.min(Math.max(f32(f32(samples[((b * c + ch) * h + y) * w + x] / 2) + 0.5), 0), 1);
          out[((b * h + y) * w + x) * c + ch] = roundHalfEven(f32(v * 255));
        }
  return out;
}
