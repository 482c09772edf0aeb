/**
 * A minimal QMP client (QEMU Machine Protocol, JSON over a Unix socket): capabilities
 * negotiation, then one command at a time. Asynchronous events are ignored.
 */
import { type Socket, createConnection } from 'node:net';

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly qmpClass: string,
    description: string,
  ) {
    super(`QMP ${command} failed (${qmpClass}): ${description}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class QmpClient {
  readonly #socket: Socket;
  readonly #pending: Pending[] = [];
  #buffer = '';
  #greeting: Promise<unknown>;
  #closed: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    let greet: (value: unknown) => void;
    this.#greeting = new Promise((resolve) => (greet = resolve));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      for (let newline = this.#buffer.indexOf('\n'); newline >= 0; newline = this.#buffer.indexOf('\n')) {
        const line = this.#buffer.slice(0, newline).trim();
        this.#buffer = this.#buffer.slice(newline + 1);
        if (line) this.#message(JSON.parse(line) as Record<string, unknown>, greet);
      }
    });
    const fail = (error: Error): void => {
      this.#closed ??= error;
      for (const pending of this.#pending.splice(0)) pending.reject(error);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('QMP connection closed')));
  }

  /** Connects to QEMU's `-qmp unix:PATH,server=on` socket and negotiates capabilities. */
  static async connect(path: string): Promise<QmpClient> {
    const socket = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (error) => reject(new Error(`connecting to QMP socket ${path} failed: ${error.message}`)));
    });
    const client = new QmpClient(socket);
    await client.#greeting;
    await client.execute('qmp_capabilities');
    return client;
  }

  #message(message: Record<string, unknown>, greet: (value: unknown) => void): void {
    if ('QMP' in message) return greet(message.QMP);
    if ('event' in message) return;
    const pending = this.#pending.shift();
    if (!pending) return;
    const error = message.error as { class: string; desc: string } | undefined;
    if (error) pending.reject(new QmpError(pending.command, error.class, error.desc));
    else pending.resolve(message.return);
  }

  /** Runs one command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ command, resolve: resolve as (value: unknown) => void, reject });
      this.#socket.write(`${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`);
    });
  }

  close(): void {
    this.#socket.destroy();
  }
}
