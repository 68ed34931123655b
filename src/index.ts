export * from './fields.ts';
export * from './features.ts';
export * from './errors.ts';
export * from './codec.ts';
export * from './vsmmu.ts';
export * from './invalidate.ts';
