// AudioWorklet of the transcription page: passes the microphone's samples (channels
// averaged to mono) to the page, which writes them as a WAV file when recording stops.
class Recorder extends AudioWorkletProcessor {
  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      const n = channels[0].length;
      const mono = new Float32Array(n);
      for (const channel of channels) {
        for (let i = 0; i < n; i++) mono[i] += channel[i] / channels.length;
      }
      this.port.postMessage(mono, [mono.buffer]);
    }
    return true;
  }
}

registerProcessor("recorder", Recorder);
