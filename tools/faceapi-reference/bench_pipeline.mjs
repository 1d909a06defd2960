// Throughput of face-api's whole pipeline on the tfjs WebAssembly backend (SIMD):
// detectSingleFace (TinyFaceDetector, input 320) → withFaceLandmarks() → withFaceDescriptor(),
// over the decoded photos written by bench/pipeline.sh (raw RGB and index.json), looping for
// SECONDS. bench/pipeline.sh starts one process per core and adds their rates.
// Prints one JSON line.
//
// Usage: node bench_pipeline.mjs <inputs-dir> <models-dir> [seconds]
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { loadNet } from './weights.mjs';

const require = createRequire(import.meta.url);
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const wasm = require('@tensorflow/tfjs-backend-wasm');

const [inputsDir, modelsDir, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg ?? 20);
const { tf } = faceapi;
wasm.setWasmPaths(`${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`);
await tf.setBackend('wasm');
await tf.ready();

const load = (net, name) => loadNet(tf, net, modelsDir, name);
load(faceapi.nets.tinyFaceDetector, 'tiny_face_detector_model');
load(faceapi.nets.faceLandmark68Net, 'face_landmark_68_model');
load(faceapi.nets.faceRecognitionNet, 'face_recognition_model');
const options = new faceapi.TinyFaceDetectorOptions({ inputSize: 320, scoreThreshold: 0.5 });

const index = JSON.parse(fs.readFileSync(path.join(inputsDir, 'index.json'), 'utf8'));
const photos = index.map(({ name, width, height }) => tf.tensor3d(
  Int32Array.from(fs.readFileSync(path.join(inputsDir, `${name}.rgb`))), [height, width, 3], 'int32'));
const one = async (photo) => {
  const result = await faceapi.detectSingleFace(photo, options).withFaceLandmarks().withFaceDescriptor();
  return result ? 1 : 0;
};
await one(photos[0]);
let images = 0;
let found = 0;
const start = process.hrtime.bigint();
const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
while (elapsed() < seconds) {
  for (const photo of photos) {
    found += await one(photo);
    images += 1;
  }
}
console.log(JSON.stringify({
  impl: `face-api ${faceapi.version} (tfjs ${tf.version.tfjs} wasm${(await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) ? ' simd' : ''})`,
  images,
  seconds: elapsed(),
  images_per_s: Number((images / elapsed()).toFixed(2)),
  faces_found: Number((found / images).toFixed(4)),
  threads: wasm.getThreadsCount ? wasm.getThreadsCount() : 1,
  peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
}));
