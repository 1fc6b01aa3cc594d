namespace Xapi.Model;

/// <summary>
/// The one error type of the API: a XenAPI error code and its parameters, in wire order.
/// Thrown anywhere below the dispatch boundary and encoded there as a <c>Failure</c>.
/// </summary>
public sealed class XenApiException : Exception
{
    public XenApiException(string code, params string[] parameters)
        : base(parameters.Length == 0 ? code : $"{code} [{string.Join(", ", parameters)}]")
    {
        Code = code;
        Parameters = parameters;
    }

    public string Code { get; }

    public IReadOnlyList<string> Parameters { get; }

    public IEnumerable<string> Description => Parameters.Prepend(Code);
}
