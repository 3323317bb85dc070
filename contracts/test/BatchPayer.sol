// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

import {PaymentRouter} from "../PaymentRouter.sol";

/// @notice Test helper only: pays the router several times in one transaction, so
/// that one transaction holds several payments (indexes 0, 1, …).
contract BatchPayer {
    function payMany(PaymentRouter router, string[] calldata messages) external payable {
        uint256 each = msg.value / messages.length;
        for (uint256 i = 0; i < messages.length; i++) {
            router.requestValidation{value: each}(messages[i]);
        }
    }
}
