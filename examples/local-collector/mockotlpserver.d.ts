/** The part of @elastic/mockotlpserver (which ships no types for its entry point) used here. */
declare module '@elastic/mockotlpserver' {
  export interface MockOtlpServerOptions {
    services?: ('http' | 'grpc' | 'ui')[];
    httpHostname?: string;
    /** 0 picks a free port. */
    httpPort?: number;
    grpcHostname?: string;
    /** 0 picks a free port. */
    grpcPort?: number;
    logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
    onMetrics?: (request: unknown) => void;
    onRequest?: (request: { transport: string; method: string; path: string; headers: Record<string, string> }) => void;
  }
  export class MockOtlpServer {
    constructor(options?: MockOtlpServerOptions);
    /** Where the HTTP service listens, set by start(). */
    httpUrl: URL | null;
    /** Where the gRPC service listens, set by start(). */
    grpcUrl: URL | null;
    start(): Promise<void>;
    close(): Promise<void>;
  }
  /** One form for JSON and protobuf requests: attributes as objects, 64-bit integers as strings. */
  export function normalizeMetrics(request: unknown): unknown;
}
