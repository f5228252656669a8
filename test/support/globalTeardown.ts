export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __DISKDELTA_AZURITE__?: { close(): Promise<void> } }).__DISKDELTA_AZURITE__?.close();
}
