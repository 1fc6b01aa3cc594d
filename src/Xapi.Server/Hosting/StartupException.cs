namespace Xapi.Server.Hosting;

/// <summary>
/// The daemon cannot start as things are. The message is the one line the operator reads: which
/// file or setting, what is wrong, and what to do about it.
/// </summary>
public sealed class StartupException(string message, Exception? inner = null) : Exception(message, inner);
