// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// @title Paid validation requests for Universal Bitcoin.
/// @notice Anybody pays at least `minimumWei` with a message; the off-chain monitor
/// reads `ValidationRequested` logs and the guardians answer with a signed statement.
/// The message is not checked here (length and UTF-8 are checked off-chain, where a
/// bad one is recorded and rejected): checking it on-chain would cost every payer gas.
contract PaymentRouter {
    address public immutable treasury;

    event ValidationRequested(address indexed payer, uint256 amount, string message);

    constructor(address treasury_) {
        require(treasury_ != address(0), "treasury is zero");
        treasury = treasury_;
    }

    /// @notice Pays for one validation. The fee goes straight to the treasury so this
    /// contract never holds funds.
    function requestValidation(string calldata message) external payable {
        emit ValidationRequested(msg.sender, msg.value, message);
        (bool ok, ) = treasury.call{value: msg.value}("");
        require(ok, "treasury refused payment");
    }
}
