import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 180_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
    // tests that load onnxruntime-node themselves (not through loadOrt) would leave its telemetry files,
    // $TMPDIR/mat-debug-<pid>.log, behind on every run
    env: { ORT_DISABLE_TELEMETRY: '1' },
  },
});
