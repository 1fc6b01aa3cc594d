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

    public static XenApiException HandleInvalid(string cls, string reference) => new(ErrorCodes.HandleInvalid, cls, reference);

    public static XenApiException UuidInvalid(string cls, string uuid) => new(ErrorCodes.UuidInvalid, cls, uuid);

    public static XenApiException NotImplemented(string method) => new(ErrorCodes.NotImplemented, method);

    public static XenApiException FieldTypeError(string field) => new(ErrorCodes.FieldTypeError, field);

    public static XenApiException Internal(string message) => new(ErrorCodes.InternalError, message);
}

public static class ErrorCodes
{
    public const string HandleInvalid = "HANDLE_INVALID";
    public const string UuidInvalid = "UUID_INVALID";
    public const string NotImplemented = "NOT_IMPLEMENTED";
    public const string FieldTypeError = "FIELD_TYPE_ERROR";
    public const string InternalError = "INTERNAL_ERROR";
    public const string SessionInvalid = "SESSION_INVALID";
    public const string SessionAuthenticationFailed = "SESSION_AUTHENTICATION_FAILED";
    public const string MessageMethodUnknown = "MESSAGE_METHOD_UNKNOWN";
    public const string MessageParameterCountMismatch = "MESSAGE_PARAMETER_COUNT_MISMATCH";
    public const string RbacPermissionDenied = "RBAC_PERMISSION_DENIED";
    public const string MapDuplicateKey = "MAP_DUPLICATE_KEY";
    public const string DbUniquenessConstraintViolation = "DB_UNIQUENESS_CONSTRAINT_VIOLATION";
    public const string InvalidValue = "INVALID_VALUE";
    public const string ValueNotSupported = "VALUE_NOT_SUPPORTED";
    public const string MessageRemoved = "MESSAGE_REMOVED";
    public const string ChangePasswordRejected = "CHANGE_PASSWORD_REJECTED";
    public const string UserIsNotLocalSuperuser = "USER_IS_NOT_LOCAL_SUPERUSER";
}
