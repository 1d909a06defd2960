// Descriptor throughput of face-api on the tfjs WebAssembly backend (SIMD), on the same
// 150x150 face crops as the other implementations. Prints one JSON line per batch size.
//
// Usage: node bench.mjs <inputs-dir> <models-dir> [seconds]
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { loadNet } from './weights.mjs';

const require = createRequire(import.meta.url);
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const wasm = require('@tensorflow/tfjs-backend-wasm');

const [inputsDir, modelsDir, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? 10);
const { tf } = faceapi;
wasm.setWasmPaths(`${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`);
await tf.setBackend('wasm');
await tf.ready();

loadNet(tf, faceapi.nets.faceRecognitionNet, modelsDir, 'face_recognition_model');

const names = JSON.parse(fs.readFileSync(path.join(inputsDir, 'index.json'), 'utf8'));
const faces = names.map((n) => fs.readFileSync(path.join(inputsDir, `${n}.rgb`)));
for (const batch of [1, 32]) {
  // face-api takes a batch as an array of 3-D tensors.
  const input = Array.from({ length: batch }, (_, i) => tf.tensor3d(Float32Array.from(faces[i % faces.length]), [150, 150, 3]));
  const run = async () => {
    const out = faceapi.nets.faceRecognitionNet.forwardInput(await faceapi.toNetInput(input));
    await out.data();
    out.dispose();
  };
  await run();
  let images = 0;
  const start = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
  while (elapsed() < seconds) {
    await run();
    images += batch;
  }
  console.log(JSON.stringify({
    impl: `face-api ${faceapi.version} (tfjs ${tf.version.tfjs} wasm${(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) ? ' simd' : ''})`,
    batch,
    images_per_s: Number((images / elapsed()).toFixed(2)),
    threads: wasm.getThreadsCount ? wasm.getThreadsCount() : 1,
    peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
  }));
  input.forEach((t) => t.dispose());
}
